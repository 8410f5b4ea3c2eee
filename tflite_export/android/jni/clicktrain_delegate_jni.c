/* JNI glue for org.tfclicktrain.tflite.ClickTrainDelegate: hands LiteRT's
 * Java Interpreter the same TfLiteDelegate the desktop plugin creates. */
#include <jni.h>
#include <stddef.h>
#include <stdint.h>

#include "clicktrain_tflite.h"

JNIEXPORT jlong JNICALL
Java_org_tfclicktrain_tflite_ClickTrainDelegate_createDelegate(JNIEnv* env,
                                                               jclass clazz) {
  (void)env;
  (void)clazz;
  return (jlong)(intptr_t)tflite_plugin_create_delegate(NULL, NULL, 0, NULL);
}

JNIEXPORT void JNICALL
Java_org_tfclicktrain_tflite_ClickTrainDelegate_deleteDelegate(JNIEnv* env,
                                                               jclass clazz,
                                                               jlong handle) {
  (void)env;
  (void)clazz;
  tflite_plugin_destroy_delegate((struct TfLiteDelegate*)(intptr_t)handle);
}

JNIEXPORT jstring JNICALL
Java_org_tfclicktrain_tflite_ClickTrainDelegate_kernelName(JNIEnv* env,
                                                           jclass clazz) {
  (void)clazz;
  return (*env)->NewStringUTF(env, clicktrain_tflite_kernel_name());
}
