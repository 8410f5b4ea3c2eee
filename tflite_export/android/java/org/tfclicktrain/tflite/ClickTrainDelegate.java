package org.tfclicktrain.tflite;

import java.io.Closeable;
import org.tensorflow.lite.Delegate;

/**
 * LiteRT delegate that runs tf-clicktrain's pattern-sparse conv ops
 * (ClickTrainPatternConv2D, ClickTrainPatternDepthwiseConv2D) in a .tflite
 * model exported by {@code ct.tflite.convert}.
 *
 * <pre>{@code
 * try (ClickTrainDelegate clickTrain = new ClickTrainDelegate()) {
 *   Interpreter.Options options = new Interpreter.Options()
 *       .setNumThreads(2)            // also used by the pattern-conv ops
 *       .addDelegate(clickTrain);    // first, before any other delegate
 *   try (Interpreter interpreter = new Interpreter(modelBuffer, options)) {
 *     interpreter.run(input, output);
 *   }
 * }
 * }</pre>
 *
 * The delegate must outlive every Interpreter it was added to. Close it
 * after closing them.
 */
public final class ClickTrainDelegate implements Delegate, Closeable {
  static {
    System.loadLibrary("clicktrain_tflite");
  }

  private long nativeHandle;

  public ClickTrainDelegate() {
    nativeHandle = createDelegate();
    if (nativeHandle == 0) {
      throw new IllegalStateException("Could not create the ClickTrain delegate");
    }
  }

  /** The TfLiteDelegate* that LiteRT's Interpreter applies. */
  @Override
  public long getNativeHandle() {
    if (nativeHandle == 0) {
      throw new IllegalStateException("ClickTrainDelegate was closed");
    }
    return nativeHandle;
  }

  /** Name of the kernel variant this device runs ("neon", "avx2", ...). */
  public static native String kernelName();

  @Override
  public void close() {
    if (nativeHandle != 0) {
      deleteDelegate(nativeHandle);
      nativeHandle = 0;
    }
  }

  private static native long createDelegate();

  private static native void deleteDelegate(long handle);
}
