/* A small fixed-size thread pool for the pattern-conv ops.
 *
 * The caller takes part in every parallel loop, so a pool of N threads runs
 * N - 1 workers. Idle workers spin for a few microseconds (consecutive
 * layers follow each other closely) and then sleep on a condition variable,
 * so the pool never competes for the cores with the runtime's other kernels
 * between our ops.
 */
#ifndef CLICKTRAIN_THREAD_POOL_H_
#define CLICKTRAIN_THREAD_POOL_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clicktrain_thread_pool clicktrain_thread_pool;

typedef void (*clicktrain_task_fn)(void* context, size_t index);

/* Returns a pool running `threads` threads in total (caller included), or
 * NULL when threads < 2 or on failure (callers then run serially). */
clicktrain_thread_pool* clicktrain_thread_pool_create(int threads);

void clicktrain_thread_pool_destroy(clicktrain_thread_pool* pool);

int clicktrain_thread_pool_threads(const clicktrain_thread_pool* pool);

/* Calls task(context, i) for every i < count, spread over the pool's threads,
 * and returns when all calls are done. A NULL pool, or a pool already busy
 * in another caller's loop, runs the loop on the calling thread. */
void clicktrain_thread_pool_parallelize(clicktrain_thread_pool* pool,
                                        clicktrain_task_fn task, void* context,
                                        size_t count);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CLICKTRAIN_THREAD_POOL_H_ */
