/* The delegate's memory budget: what the ClickTrain ops may allocate.
 *
 * When the delegate claims nodes of a graph (DelegatePrepare), it sums the
 * bytes of every tensor the graph's nodes read or write, as declared by the
 * file (shape x element size). All memory the delegate then allocates for
 * that graph's nodes -- compact weight copies, filter programs, pack and
 * scratch buffers of the float pattern conv, the sparse 1x1 conv and the
 * int8 pattern conv -- is reserved from one budget of
 *
 *     declared tensor bytes + kMemoryBudgetFixedBytes
 *
 * before it is allocated. The runtime itself holds the declared tensors
 * (once), so a process running a file stays within about 2x the file's
 * declared tensors plus the fixed bound plus the runtime's own baseline,
 * whatever the file declares. A graph declaring more than
 * kMaxDeclaredTensorBytes is refused.
 *
 * Every node reserves its weight copy when the delegate claims it, before
 * any node is prepared, so the optional scratch of early nodes never
 * starves a later node of its weights. A node whose fast path then does not
 * fit what is left runs on as many threads as fit, then on its reference
 * kernel with no scratch (pattern convs; counted by
 * clicktrain_tflite_memory_fallbacks), and a node whose weights or
 * single-thread scratch do not fit is refused with an error naming the node
 * and the bytes. A node returns its reservations when it is prepared again
 * and when it is freed.
 *
 * A graph's budget is shared by its nodes through a reference count and
 * reserved with atomics, so one delegate may serve several interpreters,
 * each with its own budget, from any threads. */
#ifndef CLICKTRAIN_MEMORY_BUDGET_H_
#define CLICKTRAIN_MEMORY_BUDGET_H_

#include <atomic>
#include <cstddef>
#include <string>

#include "litert_abi.h"

namespace clicktrain {

/* Covers the per-thread workspaces of every node of a model on a few
 * threads: ResNet-18 int8 (7 MB declared) keeps every fast path on 4
 * threads with 64 MiB, not with 32 MiB. */
constexpr size_t kMemoryBudgetFixedBytes = size_t{64} << 20;
constexpr size_t kMaxDeclaredTensorBytes = size_t{1} << 40;

class MemoryBudget {
 public:
  /* A budget of `declared_bytes` + kMemoryBudgetFixedBytes with one
   * reference (the caller's), or nullptr when out of memory. */
  static MemoryBudget* Create(size_t declared_bytes);

  void Acquire();
  /* Drops a reference; the last one deletes the budget. */
  void Release();

  /* Takes `bytes` from the budget if they fit; false (taking nothing) if
   * they do not. */
  bool Reserve(size_t bytes);
  void Unreserve(size_t bytes);

  size_t declared_bytes() const { return declared_bytes_; }
  size_t limit() const { return limit_; }
  size_t available() const;

 private:
  explicit MemoryBudget(size_t declared_bytes);

  const size_t declared_bytes_;
  const size_t limit_;
  std::atomic<size_t> used_{0};
  std::atomic<int> references_{1};
};

/* What one node holds of a budget; returned when reset or destroyed. */
class BudgetShare {
 public:
  BudgetShare() = default;
  BudgetShare(const BudgetShare&) = delete;
  BudgetShare& operator=(const BudgetShare&) = delete;
  ~BudgetShare();

  /* Shares `budget` (takes a reference; nullptr leaves the share
   * unattached, and an unattached share refuses every reservation). */
  void Attach(MemoryBudget* budget);
  bool attached() const { return budget_ != nullptr; }

  /* Adds `bytes` to this share if the budget has them. */
  bool Reserve(size_t bytes);
  /* Makes this share hold exactly `bytes`: reserves the difference or
   * returns the excess; false (holding what it held) if it cannot. */
  bool Resize(size_t bytes);
  /* Returns `bytes` of this share (at most what it holds). */
  void Return(size_t bytes);
  void ReturnAll() { Return(held_); }

  size_t held() const { return held_; }
  size_t available() const;

  /* "node <node_index> needs <bytes> bytes for <what>, but only ... are
   * left of the delegate's memory budget of ...". */
  std::string RefusalMessage(int node_index, const char* what,
                             size_t bytes) const;
  /* Reports RefusalMessage under `kernel_name`; returns kTfLiteError. */
  TfLiteStatus ReportRefusal(TfLiteContext* context, const char* kernel_name,
                             int node_index, const char* what,
                             size_t bytes) const;

 private:
  MemoryBudget* budget_ = nullptr;
  size_t held_ = 0;
};

/* Elements of `tensor` by its dims (negative extents count as 0); 0 for
 * nullptr, SIZE_MAX on overflow. */
size_t ElementCount(const TfLiteTensor* tensor);

/* The most threads, up to `threads`, whose scratch fits `available` bytes
 * when a run holds `fixed_bytes` plus `per_thread_bytes` per thread; 0 when
 * not even one thread fits. */
int AffordableThreads(size_t available, size_t fixed_bytes,
                      size_t per_thread_bytes, int threads);

/* Sums shape x element size over the tensors read or written by the nodes
 * of `plan` (each tensor once; negative dimensions count as 0, types
 * without a fixed size as their allocated bytes). Returns false with the
 * reason in `why` when the sum overflows or passes kMaxDeclaredTensorBytes. */
bool DeclaredTensorBytes(TfLiteContext* context, const TfLiteIntArray* plan,
                         size_t* bytes, std::string* why);

}  // namespace clicktrain

/* Provided by the delegate (delegate.cc), for its node kernels' Init: the
 * budget of the graph it is claiming nodes of, borrowed (a node's
 * BudgetShare::Attach takes its own reference); nullptr outside
 * DelegatePrepare. */
clicktrain::MemoryBudget* ClickTrainDelegateBudget(TfLiteDelegate* delegate);

/* Provided by the delegate: counts a node that, for lack of budget, runs on
 * fewer threads or on its reference kernel instead of its fast path. */
void ClickTrainDelegateCountFallback(TfLiteDelegate* delegate);

#endif  /* CLICKTRAIN_MEMORY_BUDGET_H_ */
