// weft::net: TCP and Unix-socket networking for goroutines (Go's net package).
//
//   auto [ln, err] = weft::net::listen("127.0.0.1:8080");
//   for (;;) {
//     auto [c, err] = ln.accept();
//     if (err) break;
//     weft::go([c] () mutable {
//       char buf[4096];
//       for (;;) {
//         auto [n, err] = c.read(buf, sizeof buf);
//         if (err) break;                        // errc::eof when the peer is done
//         if (c.write(buf, n).err) break;
//       }
//       c.close();
//     });
//   }
//
// Everything is blocking-style and parks only the calling goroutine: sockets are
// non-blocking underneath and the netpoller (netpoll/poller.h) readies goroutines when
// their descriptor can proceed. No call blocks a thread except name resolution, which
// runs inside weft::blocking().
//
// conn and listener are cheap shared handles; copies name the same socket, so one
// goroutine may read while another writes. Concurrent reads (or concurrent writes) on one
// conn are serialized. Results are {n, err} pairs (structured bindings); errors are in
// netpoll/errors.h (timeout, closed, refused, reset, eof...).
//
// Deadlines are absolute (steady_clock) and apply to every later operation until changed;
// time_point{} clears them. An operation that hits its deadline fails with errc::timeout
// and the conn stays usable (extend the deadline and retry), as in Go. Closing a conn
// wakes its blocked reader and writer with errc::closed.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "netpoll/errors.h"
#include "netpoll/fd.h"
#include "runtime/context.h"

namespace weft::net {

using time_point = std::chrono::steady_clock::time_point;

class conn {
 public:
  conn() = default;  // not connected: every operation fails with errc::closed

  // One read: returns as soon as some bytes are available (n > 0), or {0, eof} at end
  // of stream, or an error.
  io_result read(void* buf, std::size_t n);
  // Reads exactly n bytes: short streams fail with unexpected_eof (eof if nothing came).
  io_result read_full(void* buf, std::size_t n);
  // Writes all n bytes, or fails; n tells how many went out before the error.
  io_result write(const void* buf, std::size_t n);
  io_result write(std::string_view s) { return write(s.data(), s.size()); }
  io_result writev(const iovec* iov, int iovcnt);

  void set_deadline(time_point t);
  void set_read_deadline(time_point t);
  void set_write_deadline(time_point t);

  std::error_code close_write();  // half-close: the peer reads eof, we can still read
  std::error_code close();        // errc::closed if already closed

  // Calls cb(arg) from the scheduler when the peer shuts down or the connection fails
  // (at once if it already did). cb must not block. One watch at a time; unwatch waits
  // for a call in progress. (The HTTP server uses it to cancel request contexts.)
  void watch_hangup(void (*cb)(void*), void* arg) {
    if (fd_) fd_->watch_hangup(cb, arg);
  }
  void unwatch_hangup() {
    if (fd_) fd_->unwatch_hangup();
  }
  // Calls cb(arg) once, from the scheduler, when the conn becomes readable or is closed,
  // instead of a goroutine waiting in read(): an idle connection then holds no goroutine
  // and no stack. cb must not block (typically it starts a goroutine).
  bool watch_readable(void (*cb)(void*), void* arg) { return fd_ && fd_->watch_readable(cb, arg); }
  void unwatch_readable() {
    if (fd_) fd_->unwatch_readable();
  }

  std::string local_address() const { return local_; }
  std::string remote_address() const { return remote_; }
  int native_handle() const { return fd_ ? fd_->sysfd() : -1; }
  // Where the socket's descriptor and its poll state live, the memory every read and
  // write touches first: for weft::set_resume_hints. Null when not connected.
  std::pair<const void*, const void*> state_addresses() const {
    return fd_ ? std::pair<const void*, const void*>(fd_.get(), fd_->poll_desc_address())
               : std::pair<const void*, const void*>(nullptr, nullptr);
  }
  explicit operator bool() const { return static_cast<bool>(fd_); }

 private:
  friend class listener;
  friend struct conn_access;
  std::shared_ptr<detail::netfd> fd_;
  std::string local_;
  std::string remote_;
};

struct listen_options {
  int backlog = 4096;            // capped by net.core.somaxconn
  bool reuse_port = false;       // SO_REUSEPORT: several processes share the port
  bool no_delay = true;          // TCP_NODELAY on accepted connections (Go's default)
  std::chrono::seconds keepalive{15};  // TCP keepalive on accepted connections; 0: off
};

struct listen_result;
class listener;
listen_result listen(std::string_view address, const listen_options& opts);

class listener {
 public:
  listener() = default;

  struct accepted {
    conn c;
    std::error_code err;
  };
  // Waits for the next connection. Out of descriptors (EMFILE, ENFILE), it backs off
  // (5 ms doubling to 1 s, as Go's http.Server does) and retries, parking, never
  // spinning; other errors and close() end it.
  accepted accept();
  std::error_code close();
  std::string address() const { return addr_; }
  int native_handle() const { return fd_ ? fd_->sysfd() : -1; }
  explicit operator bool() const { return static_cast<bool>(fd_); }

 private:
  friend listen_result listen(std::string_view address, const listen_options& opts);
  std::shared_ptr<detail::netfd> fd_;
  std::string addr_;
  listen_options opts_;
  bool is_unix_ = false;
  std::string unix_path_;
};

struct listen_result {
  listener ln;
  std::error_code err;
};
// "host:port" (":port" or "[::]:port" for every interface, port 0 for any), or a Unix
// socket path ("unix:/path" or "/path"; a stale socket file is replaced).
listen_result listen(std::string_view address, const listen_options& opts);
inline listen_result listen(std::string_view address) { return listen(address, listen_options{}); }

struct dial_result {
  conn c;
  std::error_code err;
};
// Connects to "host:port" (names resolved through the system resolver, in blocking())
// or a Unix socket path. Gives up when ctx is done (its err()) or after `timeout`.
dial_result dial(std::string_view address, const context& ctx);
dial_result dial(std::string_view address, std::chrono::nanoseconds timeout);

// Descriptors registered with the poller right now (tests check none leak).
int64_t registered_descriptors();

}  // namespace weft::net
