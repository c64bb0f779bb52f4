// netfd: a non-blocking socket with its poll_desc (Go's internal/poll.FD).
//
// Reads are serialized among themselves and writes among themselves (a goroutine-aware
// mutex each, so two readers never wait on the one rg word); a read and a write may run
// at once. Every operation holds a reference while it is in a system call; close() marks
// the fd closing, wakes blocked readers and writers (their operations fail with
// errc::closed), and the last reference out closes the descriptor. close() returns only
// then, so that the fd number is released when it returns, and no operation can ever
// reach a number that was already reused for another socket.
//
// Stream sockets skip the read that would fail with EAGAIN. A recv that returns less
// than was asked for has emptied the socket's queue; until the poller reports the read
// side again (poll_desc::rgen moves), another recv could only say EAGAIN, so the next
// read parks at once instead of paying that system call. Go's net.Conn pays it on every
// request of a keep-alive connection; here it was about one system call in four of a
// ping-pong echo.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <system_error>

#include "netpoll/poll_desc.h"
#include "runtime/internal/sema.h"
#include "runtime/mutex.h"

namespace weft::net {

struct io_result {
  std::size_t n = 0;
  std::error_code err;
};

namespace detail {

class netfd {
 public:
  // Takes ownership of fd (already non-blocking) and registers it with the poller.
  // stream: fd is a SOCK_STREAM socket (a short read means its queue is empty).
  static std::shared_ptr<netfd> open(int fd, std::error_code& err, bool stream = false);
  ~netfd();

  io_result read(void* buf, std::size_t n);                   // one recv; 0 + eof at EOF
  io_result write(const void* buf, std::size_t n);            // all of it, or an error
  io_result writev(const iovec* iov, int iovcnt);             // all of it, or an error
  // accept4 (non-blocking, close-on-exec); waits for readiness.
  int accept(sockaddr_storage* sa, socklen_t* len, std::error_code& err);
  // Non-blocking connect completion.
  std::error_code connect(const sockaddr* sa, socklen_t len);
  std::error_code close();
  std::error_code shutdown(int how);
  // deadline: nanotime, 0 clears. mode 'r', 'w' or 'r' + 'w'.
  void set_deadline(int64_t deadline, int mode) { pd_set_deadline(pd_, deadline, mode); }
  int sysfd() const { return fd_; }
  void watch_hangup(void (*cb)(void*), void* arg) { pd_watch_hangup(pd_, cb, arg); }
  void unwatch_hangup() { pd_unwatch_hangup(pd_); }
  bool watch_readable(void (*cb)(void*), void* arg) { return pd_watch_readable(pd_, cb, arg); }
  void unwatch_readable() { pd_unwatch_readable(pd_); }
  bool closed() const { return state_.load(std::memory_order_acquire) & kClosing; }
  // Where the descriptor's poll state lives (for weft::set_resume_hints).
  const void* poll_desc_address() const { return pd_; }

 private:
  explicit netfd(int fd) : fd_(fd) {}
  bool incref();
  void decref();
  std::error_code wait(int mode);

  static constexpr uint64_t kClosing = uint64_t{1} << 63;
  int fd_;
  bool is_socket_ = true;           // cleared on the first ENOTSOCK (pipes, signalfd...)
  bool stream_ = false;             // SOCK_STREAM: short reads drain the queue
  bool drained_ = false;            // rmu_: the last recv was short...
  uint32_t drained_gen_ = 0;        // rmu_: ...and pd_->rgen was this before it
  poll_desc* pd_ = nullptr;
  std::atomic<uint64_t> state_{1};  // references (the open one included) | kClosing
  weft::mutex rmu_;
  weft::mutex wmu_;
  weft::detail::sema destroyed_;   // close() waits here for the last reference
};

}  // namespace detail
}  // namespace weft::net
