// netfd; see netpoll/fd.h. System calls read errno immediately (HACKING.md).
#include "netpoll/fd.h"

#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include "netpoll/errors.h"
#include "runtime/internal/sched.h"

namespace weft::net::detail {

namespace {

// Raw system calls for the hot path: glibc's wrappers of recv/sendmsg are cancellation
// points and toggle the thread's async-cancel state around every call.
inline ssize_t sys_recv(int fd, void* buf, std::size_t n) {
  return syscall(SYS_recvfrom, fd, buf, n, 0, nullptr, nullptr);
}
inline ssize_t sys_send(int fd, const void* buf, std::size_t n) {
  return syscall(SYS_sendto, fd, buf, n, MSG_NOSIGNAL, nullptr, 0);
}
inline ssize_t sys_sendmsg(int fd, const msghdr* msg) { return syscall(SYS_sendmsg, fd, msg, MSG_NOSIGNAL); }

}  // namespace

std::shared_ptr<netfd> netfd::open(int fd, std::error_code& err, bool stream) {
  std::shared_ptr<netfd> f(new netfd(fd));
  f->stream_ = stream;
  f->pd_ = pd_open(fd, &err);
  if (!f->pd_) {
    ::close(fd);
    f->fd_ = -1;
    f->state_.store(kClosing);
    return nullptr;
  }
  return f;
}

netfd::~netfd() {
  // A handle dropped without close(): close now (no operation can be running, since
  // each holds a reference to the shared netfd through its caller).
  // State first: once closing, fd_ belongs to whoever drops the last reference.
  if (!(state_.load(std::memory_order_acquire) & kClosing) && fd_ >= 0) close();
}

bool netfd::incref() {
  uint64_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (s & kClosing) return false;
    if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire)) return true;
  }
}

void netfd::decref() {
  uint64_t s = state_.fetch_sub(1, std::memory_order_acq_rel) - 1;
  if (s == kClosing) {
    // Last reference of a closing fd: now nobody can be inside a system call with it.
    pd_close(pd_);
    ::close(fd_);
    fd_ = -1;
    destroyed_.release();
  }
}

std::error_code netfd::wait(int mode) {
  switch (pd_wait(pd_, mode)) {
    case wait_result::ok: return {};
    case wait_result::timeout: return errc::timeout;
    case wait_result::closed: return errc::closed;
  }
  return errc::closed;
}

io_result netfd::read(void* buf, std::size_t n) {
  std::lock_guard<weft::mutex> l(rmu_);
  if (!incref()) return {0, errc::closed};
  io_result r;
  // Drained by the last read and nothing reported since: wait before the first recv.
  // Not after a hang-up: an EOF or error queued behind the data is still to be read.
  bool wait_first = drained_ && pd_read_gen(pd_) == drained_gen_ && !pd_hung_up(pd_);
  drained_ = false;
  for (;;) {
    if (wait_first) {
      wait_first = false;
      if ((r.err = wait('r'))) break;
    }
    uint32_t gen = pd_read_gen(pd_);  // before the recv: later data moves it
    ssize_t k = is_socket_ ? sys_recv(fd_, buf, n) : ::read(fd_, buf, n);
    int e = errno;
    if (k > 0) {
      r.n = static_cast<std::size_t>(k);
      if (stream_ && r.n < n) {
        drained_ = true;
        drained_gen_ = gen;
      }
      break;
    }
    if (k == 0) {
      r.err = n == 0 ? std::error_code() : make_error_code(errc::eof);
      break;
    }
    if (e == EINTR) continue;
    if (e == ENOTSOCK && is_socket_) {  // a pipe, signalfd, eventfd...: plain read(2)
      is_socket_ = false;
      continue;
    }
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((r.err = wait('r'))) break;
      continue;
    }
    r.err = from_errno(e);
    break;
  }
  decref();
  return r;
}

io_result netfd::write(const void* buf, std::size_t n) {
  std::lock_guard<weft::mutex> l(wmu_);
  if (!incref()) return {0, errc::closed};
  io_result r;
  auto* p = static_cast<const char*>(buf);
  while (r.n < n) {
    ssize_t k = is_socket_ ? sys_send(fd_, p + r.n, n - r.n) : ::write(fd_, p + r.n, n - r.n);
    int e = errno;
    if (k >= 0) {
      r.n += static_cast<std::size_t>(k);
      continue;
    }
    if (e == EINTR) continue;
    if (e == ENOTSOCK && is_socket_) {  // a pipe or another fd type: plain write(2)
      is_socket_ = false;
      continue;
    }
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((r.err = wait('w'))) break;
      continue;
    }
    r.err = from_errno(e);
    break;
  }
  decref();
  return r;
}

io_result netfd::writev(const iovec* iov_in, int iovcnt) {
  std::lock_guard<weft::mutex> l(wmu_);
  if (!incref()) return {0, errc::closed};
  // Work on a copy we can advance through partial writes.
  constexpr int kMaxIov = 64;
  iovec local[kMaxIov];
  io_result r;
  int done_iov = 0;
  while (done_iov < iovcnt) {
    int cnt = iovcnt - done_iov < kMaxIov ? iovcnt - done_iov : kMaxIov;
    for (int i = 0; i < cnt; i++) local[i] = iov_in[done_iov + i];
    int first = 0;
    while (first < cnt) {
      if (local[first].iov_len == 0) {
        first++;
        continue;
      }
      msghdr msg{};
      msg.msg_iov = local + first;
      msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(cnt - first);
      ssize_t k = sys_sendmsg(fd_, &msg);
      int e = errno;
      if (k < 0) {
        if (e == EINTR) continue;
        if (e == EAGAIN || e == EWOULDBLOCK) {
          if ((r.err = wait('w'))) goto out;
          continue;
        }
        r.err = from_errno(e);
        goto out;
      }
      r.n += static_cast<std::size_t>(k);
      auto left = static_cast<std::size_t>(k);
      while (first < cnt && left >= local[first].iov_len) {
        left -= local[first].iov_len;
        first++;
      }
      if (first < cnt) {
        local[first].iov_base = static_cast<char*>(local[first].iov_base) + left;
        local[first].iov_len -= left;
      }
    }
    done_iov += cnt;
  }
out:
  decref();
  return r;
}

int netfd::accept(sockaddr_storage* sa, socklen_t* len, std::error_code& err) {
  std::lock_guard<weft::mutex> l(rmu_);
  err.clear();
  if (!incref()) {
    err = errc::closed;
    return -1;
  }
  int fd = -1;
  for (;;) {
    *len = sizeof(sockaddr_storage);
    fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(sa), len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int e = errno;
    if (fd >= 0) break;
    if (e == EINTR || e == ECONNABORTED) continue;  // Go retries these too
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((err = wait('r'))) break;
      continue;
    }
    err = from_errno(e);
    break;
  }
  decref();
  return fd;
}

std::error_code netfd::connect(const sockaddr* sa, socklen_t len) {
  if (!incref()) return errc::closed;
  std::error_code err;
  for (;;) {
    int rc = ::connect(fd_, sa, len);
    int e = errno;
    if (rc == 0) break;
    if (e == EINTR) continue;
    if (e != EINPROGRESS && e != EALREADY) {
      err = from_errno(e);
      break;
    }
    // Wait for writability, then ask the socket how the connect went.
    for (;;) {
      if ((err = wait('w'))) break;
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
      if (soerr == 0) {
        // Writable and no error can still be spurious (a stale readiness): check that
        // we have a peer.
        sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        if (getpeername(fd_, reinterpret_cast<sockaddr*>(&peer), &pl) == 0) break;
        continue;
      }
      if (soerr == EINPROGRESS || soerr == EALREADY || soerr == EINTR) continue;
      err = from_errno(soerr);
      break;
    }
    break;
  }
  decref();
  return err;
}

std::error_code netfd::shutdown(int how) {
  if (!incref()) return errc::closed;
  std::error_code err;
  if (::shutdown(fd_, how) != 0) err = from_errno(errno);
  decref();
  return err;
}

std::error_code netfd::close() {
  uint64_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (s & kClosing) return errc::closed;
    if (state_.compare_exchange_weak(s, s | kClosing, std::memory_order_acq_rel)) break;
  }
  pd_evict(pd_);  // blocked readers and writers wake with errc::closed
  decref();       // the open reference; the last one out closes the fd
  if (current_goroutine()) {
    destroyed_.acquire(wait_reason::io_wait);
  } else {
    // A plain thread (a destructor outside the runtime): operations still in flight
    // are on their way out, woken by the eviction.
    while (!destroyed_.try_acquire()) sched_yield();
  }
  return {};
}

}  // namespace weft::net::detail
