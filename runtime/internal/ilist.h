// An intrusive doubly-linked list: the wait queues of channels, the runtime semaphore and
// weft::semaphore. T has `T* next` and `T* prev` members (null while not queued). No
// allocation, O(1) push and remove; the owner's lock guards it.
#pragma once

namespace weft::detail {

template <class T>
struct ilist {
  T* head = nullptr;
  T* tail = nullptr;

  bool empty() const { return head == nullptr; }

  void push_back(T* x) {
    x->next = nullptr;
    x->prev = tail;
    if (tail)
      tail->next = x;
    else
      head = x;
    tail = x;
  }

  void push_front(T* x) {
    x->prev = nullptr;
    x->next = head;
    if (head)
      head->prev = x;
    else
      tail = x;
    head = x;
  }

  // Unlinks x; false (and nothing changes) if x is not in this list.
  bool remove(T* x) {
    if (!x->prev && head != x) return false;
    if (x->prev)
      x->prev->next = x->next;
    else
      head = x->next;
    if (x->next)
      x->next->prev = x->prev;
    else
      tail = x->prev;
    x->next = x->prev = nullptr;
    return true;
  }
};

}  // namespace weft::detail
