#include "memory_budget.h"

#include <cstdint>
#include <cstdio>
#include <new>
#include <vector>

#include "node_checks.h"

namespace clicktrain {

MemoryBudget::MemoryBudget(size_t declared_bytes)
    : declared_bytes_(declared_bytes),
      limit_(declared_bytes + kMemoryBudgetFixedBytes) {}

MemoryBudget* MemoryBudget::Create(size_t declared_bytes) {
  if (declared_bytes > kMaxDeclaredTensorBytes) return nullptr;
  return new (std::nothrow) MemoryBudget(declared_bytes);
}

void MemoryBudget::Acquire() {
  references_.fetch_add(1, std::memory_order_relaxed);
}

void MemoryBudget::Release() {
  if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

bool MemoryBudget::Reserve(size_t bytes) {
  size_t used = used_.load(std::memory_order_relaxed);
  do {
    if (bytes > limit_ - used) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes,
                                        std::memory_order_relaxed));
  return true;
}

void MemoryBudget::Unreserve(size_t bytes) {
  used_.fetch_sub(bytes, std::memory_order_relaxed);
}

size_t MemoryBudget::available() const {
  return limit_ - used_.load(std::memory_order_relaxed);
}

BudgetShare::~BudgetShare() {
  if (budget_ == nullptr) return;
  ReturnAll();
  budget_->Release();
}

void BudgetShare::Attach(MemoryBudget* budget) {
  if (budget_ != nullptr) {
    ReturnAll();
    budget_->Release();
  }
  budget_ = budget;
  if (budget_ != nullptr) budget_->Acquire();
}

bool BudgetShare::Reserve(size_t bytes) {
  if (budget_ == nullptr || !budget_->Reserve(bytes)) return false;
  held_ += bytes;
  return true;
}

bool BudgetShare::Resize(size_t bytes) {
  if (bytes <= held_) {
    Return(held_ - bytes);
    return true;
  }
  return Reserve(bytes - held_);
}

void BudgetShare::Return(size_t bytes) {
  if (bytes > held_) bytes = held_;
  if (budget_ != nullptr) budget_->Unreserve(bytes);
  held_ -= bytes;
}

size_t BudgetShare::available() const {
  return budget_ == nullptr ? 0 : budget_->available();
}

std::string BudgetShare::RefusalMessage(int node_index, const char* what,
                                        size_t bytes) const {
  char message[400];
  if (budget_ == nullptr) {
    std::snprintf(message, sizeof(message),
                  "node %d has no memory budget (it was not claimed by the "
                  "delegate's Prepare)",
                  node_index);
  } else {
    std::snprintf(message, sizeof(message),
                  "node %d needs %zu bytes for %s, but only %zu bytes are "
                  "left of the delegate's memory budget of %zu bytes (the "
                  "%zu bytes of tensors the model declares + %zu)",
                  node_index, bytes, what, budget_->available(),
                  budget_->limit(), budget_->declared_bytes(),
                  kMemoryBudgetFixedBytes);
  }
  return message;
}

TfLiteStatus BudgetShare::ReportRefusal(TfLiteContext* context,
                                        const char* kernel_name,
                                        int node_index, const char* what,
                                        size_t bytes) const {
  return ReportNodeError(context, kernel_name, "%s",
                         RefusalMessage(node_index, what, bytes).c_str());
}

size_t ElementCount(const TfLiteTensor* tensor) {
  if (tensor == nullptr || tensor->dims == nullptr) return 0;
  size_t count = 1;
  for (int d = 0; d < tensor->dims->size; ++d) {
    const int extent = tensor->dims->data[d];
    if (__builtin_mul_overflow(count,
                               static_cast<size_t>(extent < 0 ? 0 : extent),
                               &count)) {
      return SIZE_MAX;
    }
  }
  return count;
}

int AffordableThreads(size_t available, size_t fixed_bytes,
                      size_t per_thread_bytes, int threads) {
  if (threads < 1 || fixed_bytes > available) return 0;
  if (per_thread_bytes == 0) return threads;
  const size_t extra = (available - fixed_bytes) / per_thread_bytes;
  return extra + 1 >= static_cast<size_t>(threads)
             ? threads
             : static_cast<int>(extra) + 1;
}

bool DeclaredTensorBytes(TfLiteContext* context, const TfLiteIntArray* plan,
                         size_t* bytes, std::string* why) {
  std::vector<bool> counted(context->tensors_size, false);
  size_t total = 0;
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* registration = nullptr;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node,
                                        &registration) != kTfLiteOk ||
        node == nullptr) {
      continue;
    }
    for (const TfLiteIntArray* indices : {node->inputs, node->outputs}) {
      if (indices == nullptr) continue;
      for (int j = 0; j < indices->size; ++j) {
        const int index = indices->data[j];
        if (index < 0 || static_cast<size_t>(index) >= context->tensors_size ||
            counted[index]) {
          continue;
        }
        counted[index] = true;
        const TfLiteTensor& tensor = context->tensors[index];
        const size_t element_size = TypeSize(tensor.type);
        size_t tensor_bytes = element_size == 0 ? tensor.bytes : element_size;
        bool overflow = false;
        if (element_size != 0 && tensor.dims != nullptr) {
          for (int d = 0; d < tensor.dims->size; ++d) {
            const int extent = tensor.dims->data[d];
            overflow |= __builtin_mul_overflow(
                tensor_bytes, static_cast<size_t>(extent < 0 ? 0 : extent),
                &tensor_bytes);
          }
        }
        overflow |= __builtin_add_overflow(total, tensor_bytes, &total);
        if (overflow || total > kMaxDeclaredTensorBytes) {
          *why = "tensor " + std::to_string(index) +
                 " brings the tensors the model declares past " +
                 std::to_string(kMaxDeclaredTensorBytes) + " bytes";
          return false;
        }
      }
    }
  }
  *bytes = total;
  return true;
}

}  // namespace clicktrain
