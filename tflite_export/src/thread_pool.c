#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

/* Spin iterations before a worker sleeps (a pause is ~10-40 ns). */
enum { kSpinIterations = 4000 };

struct clicktrain_thread_pool {
  int threads;
  pthread_t* workers;
  pthread_mutex_t mutex;       /* guards sleeping and `stop` */
  pthread_cond_t wake;
  pthread_mutex_t busy;        /* held by the caller of a parallel loop */
  atomic_uint generation;      /* bumped for every loop */
  atomic_size_t next_index;
  /* Workers join a loop only while it is open: the caller closes it when
   * the tasks run out and then waits only for workers that joined, never for
   * one that other processes keep off the CPU. */
  atomic_uint joined;          /* (workers in the loop << 1) | open */
  clicktrain_task_fn task;
  void* context;
  size_t count;
  int stop;
};

static void run_tasks(clicktrain_thread_pool* pool) {
  for (;;) {
    const size_t index =
        atomic_fetch_add_explicit(&pool->next_index, 1, memory_order_relaxed);
    if (index >= pool->count) return;
    pool->task(pool->context, index);
  }
}

static void* worker_main(void* argument) {
  clicktrain_thread_pool* pool = (clicktrain_thread_pool*)argument;
  /* Not a load: a worker that starts late must still join the loops
   * published since the pool was created (generation 0). */
  unsigned seen = 0;
  for (;;) {
    unsigned now = seen;
    for (int spin = 0; spin < kSpinIterations; ++spin) {
      now = atomic_load_explicit(&pool->generation, memory_order_acquire);
      if (now != seen) break;
      CPU_RELAX();
    }
    if (now == seen) {
      pthread_mutex_lock(&pool->mutex);
      while (!pool->stop &&
             (now = atomic_load(&pool->generation)) == seen) {
        pthread_cond_wait(&pool->wake, &pool->mutex);
      }
      const int stop = pool->stop;
      pthread_mutex_unlock(&pool->mutex);
      if (stop) return NULL;
    }
    seen = now;
    unsigned state = atomic_load_explicit(&pool->joined, memory_order_acquire);
    while ((state & 1u) &&
           !atomic_compare_exchange_weak_explicit(&pool->joined, &state, state + 2,
                                                  memory_order_acquire,
                                                  memory_order_acquire)) {
    }
    if (!(state & 1u)) continue;  /* closed: the caller did the work */
    run_tasks(pool);
    atomic_fetch_sub_explicit(&pool->joined, 2, memory_order_release);
  }
}

clicktrain_thread_pool* clicktrain_thread_pool_create(int threads) {
  if (threads < 2) return NULL;
  clicktrain_thread_pool* pool =
      (clicktrain_thread_pool*)calloc(1, sizeof(*pool));
  if (pool == NULL) return NULL;
  pool->workers = (pthread_t*)calloc((size_t)threads - 1, sizeof(pthread_t));
  if (pool->workers == NULL) {
    free(pool);
    return NULL;
  }
  pthread_mutex_init(&pool->mutex, NULL);
  pthread_mutex_init(&pool->busy, NULL);
  pthread_cond_init(&pool->wake, NULL);
  atomic_init(&pool->generation, 0);
  atomic_init(&pool->next_index, 0);
  atomic_init(&pool->joined, 0);
  pool->threads = 1;
  for (int i = 0; i < threads - 1; ++i) {
    if (pthread_create(&pool->workers[i], NULL, worker_main, pool) != 0) break;
    ++pool->threads;
  }
  if (pool->threads < 2) {
    clicktrain_thread_pool_destroy(pool);
    return NULL;
  }
  return pool;
}

void clicktrain_thread_pool_destroy(clicktrain_thread_pool* pool) {
  if (pool == NULL) return;
  pthread_mutex_lock(&pool->mutex);
  pool->stop = 1;
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);
  for (int i = 0; i < pool->threads - 1; ++i) {
    pthread_join(pool->workers[i], NULL);
  }
  pthread_cond_destroy(&pool->wake);
  pthread_mutex_destroy(&pool->busy);
  pthread_mutex_destroy(&pool->mutex);
  free(pool->workers);
  free(pool);
}

int clicktrain_thread_pool_threads(const clicktrain_thread_pool* pool) {
  return pool == NULL ? 1 : pool->threads;
}

void clicktrain_thread_pool_parallelize(clicktrain_thread_pool* pool,
                                        clicktrain_task_fn task, void* context,
                                        size_t count) {
  if (pool == NULL || count < 2 || pthread_mutex_trylock(&pool->busy) != 0) {
    for (size_t i = 0; i < count; ++i) task(context, i);
    return;
  }
  pool->task = task;
  pool->context = context;
  pool->count = count;
  atomic_store_explicit(&pool->next_index, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->joined, 1u, memory_order_release);
  /* Publish the loop, then wake sleepers (spinners see the generation). */
  pthread_mutex_lock(&pool->mutex);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);
  run_tasks(pool);
  atomic_fetch_and_explicit(&pool->joined, ~1u, memory_order_acq_rel);
  /* Joined workers are finishing their last task. */
  for (int spin = 0;
       atomic_load_explicit(&pool->joined, memory_order_acquire) != 0;
       ++spin) {
    if (spin < kSpinIterations) {
      CPU_RELAX();
    } else {
      sched_yield();
    }
  }
  pthread_mutex_unlock(&pool->busy);
}
