// conn, listener, listen and dial; see netpoll/net.h.
#include "netpoll/net.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <cerrno>
#include <vector>

#include "netpoll/address.h"
#include "netpoll/poller.h"
#include "runtime/chan.h"
#include "runtime/internal/sched.h"
#include "runtime/runtime.h"
#include "runtime/select.h"
#include "runtime/wait_group.h"

namespace weft::net {

namespace {

int64_t to_nanotime(time_point t) {
  if (t == time_point{}) return 0;
  int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return ns > 0 ? ns : 1;  // a time before the clock's epoch is simply in the past
}

std::string local_of(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  return format_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

std::string remote_of(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  return format_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

void set_tcp_options(int fd, bool no_delay, std::chrono::seconds keepalive) {
  int one = 1;
  if (no_delay) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (keepalive.count() > 0) {
    int secs = static_cast<int>(keepalive.count());
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof secs);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &secs, sizeof secs);
  }
}


}  // namespace

// Lets listener/dial fill a conn's private parts.
struct conn_access {
  static conn make(std::shared_ptr<detail::netfd> fd) {
    conn c;
    c.local_ = local_of(fd->sysfd());
    c.remote_ = remote_of(fd->sysfd());
    c.fd_ = std::move(fd);
    return c;
  }
};

// ---------------------------------------------------------------------------------------
// conn

io_result conn::read(void* buf, std::size_t n) {
  if (!fd_) return {0, errc::closed};
  return fd_->read(buf, n);
}

io_result conn::read_full(void* buf, std::size_t n) {
  io_result total;
  auto* p = static_cast<char*>(buf);
  while (total.n < n) {
    io_result r = read(p + total.n, n - total.n);
    total.n += r.n;
    if (r.err) {
      total.err = (r.err == errc::eof && total.n > 0) ? make_error_code(errc::unexpected_eof) : r.err;
      return total;
    }
  }
  return total;
}

io_result conn::write(const void* buf, std::size_t n) {
  if (!fd_) return {0, errc::closed};
  return fd_->write(buf, n);
}

io_result conn::writev(const iovec* iov, int iovcnt) {
  if (!fd_) return {0, errc::closed};
  return fd_->writev(iov, iovcnt);
}

void conn::set_deadline(time_point t) {
  if (fd_) fd_->set_deadline(to_nanotime(t), 'r' + 'w');
}
void conn::set_read_deadline(time_point t) {
  if (fd_) fd_->set_deadline(to_nanotime(t), 'r');
}
void conn::set_write_deadline(time_point t) {
  if (fd_) fd_->set_deadline(to_nanotime(t), 'w');
}

std::error_code conn::close_write() {
  if (!fd_) return errc::closed;
  return fd_->shutdown(SHUT_WR);
}

std::error_code conn::close() {
  if (!fd_) return errc::closed;
  return fd_->close();
}

// ---------------------------------------------------------------------------------------
// listener

listener::accepted listener::accept() {
  if (!fd_) return {conn(), errc::closed};
  auto backoff = std::chrono::milliseconds(0);
  for (;;) {
    sockaddr_storage ss;
    socklen_t len;
    std::error_code err;
    int fd = fd_->accept(&ss, &len, err);
    if (fd >= 0) {
      if (!is_unix_) set_tcp_options(fd, opts_.no_delay, opts_.keepalive);
      auto nfd = detail::netfd::open(fd, err, /*stream=*/true);
      if (!nfd) return {conn(), err};
      return {conn_access::make(std::move(nfd)), {}};
    }
    // Compare category addresses: UBSan's vptr check misfires on libstdc++'s
    // system_category object when asked to call its operator==.
    int e = &err.category() == &std::system_category() ? err.value() : 0;
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
      // Out of descriptors (or memory): the connection stays in the backlog. Back off
      // and retry the accept itself; with edge-triggered polling no new readiness edge
      // would come for it.
      backoff = backoff.count() == 0 ? std::chrono::milliseconds(5) : backoff * 2;
      if (backoff > std::chrono::seconds(1)) backoff = std::chrono::seconds(1);
      weft::sleep_for(backoff);
      if (fd_->closed()) return {conn(), errc::closed};
      continue;
    }
    return {conn(), err};
  }
}

std::error_code listener::close() {
  if (!fd_) return errc::closed;
  std::error_code err = fd_->close();
  if (!err && is_unix_) ::unlink(unix_path_.c_str());
  return err;
}

namespace {

// A stale Unix socket file (its server is gone) is replaced; a live one is not.
bool unix_socket_is_stale(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_storage ss;
  socklen_t len;
  address a;
  a.is_unix = true;
  a.path = path;
  to_sockaddr(a, ss, len);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  int e = errno;
  ::close(fd);
  return rc != 0 && e == ECONNREFUSED;
}

}  // namespace

listen_result listen(std::string_view addr_text, const listen_options& opts) {
  std::error_code err;
  address a = parse_address(addr_text, err);
  if (err) return {listener(), err};
  sockaddr_storage ss;
  socklen_t len = 0;
  int family;
  if (a.is_unix) {
    to_sockaddr(a, ss, len);
    family = AF_UNIX;
  } else {
    address bind_a = a;
    if (bind_a.host.empty()) bind_a.host = "::";  // every interface, IPv4 and IPv6
    if (!to_sockaddr(bind_a, ss, len)) return {listener(), errc::bad_address};  // names: not for listen
    family = ss.ss_family;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 && family == AF_INET6 && a.host.empty()) {
    // No IPv6 on this machine: every IPv4 interface.
    address v4 = a;
    v4.host = "0.0.0.0";
    to_sockaddr(v4, ss, len);
    family = AF_INET;
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  }
  if (fd < 0) return {listener(), from_errno(errno)};
  int one = 1, zero = 0;
  if (family != AF_UNIX) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (opts.reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (family == AF_INET6 && a.host.empty()) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  }
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  if (rc != 0 && errno == EADDRINUSE && a.is_unix && unix_socket_is_stale(a.path)) {
    ::unlink(a.path.c_str());
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  }
  if (rc != 0 || ::listen(fd, opts.backlog) != 0) {
    int e = errno;
    ::close(fd);
    return {listener(), from_errno(e)};
  }
  auto nfd = detail::netfd::open(fd, err);
  if (!nfd) return {listener(), err};
  listener ln;
  ln.fd_ = std::move(nfd);
  ln.opts_ = opts;
  ln.is_unix_ = a.is_unix;
  ln.unix_path_ = a.path;
  ln.addr_ = a.is_unix ? a.path : local_of(ln.fd_->sysfd());
  return {std::move(ln), {}};
}

// ---------------------------------------------------------------------------------------
// dial

namespace {

// Connects one socket address, giving up when ctx is done.
dial_result dial_one(const sockaddr* sa, socklen_t len, const context& ctx) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return {conn(), from_errno(errno)};
  if (sa->sa_family != AF_UNIX) set_tcp_options(fd, true, std::chrono::seconds(15));
  std::error_code err;
  auto nfd = detail::netfd::open(fd, err, /*stream=*/true);
  if (!nfd) return {conn(), err};
  if (auto d = ctx.deadline()) nfd->set_deadline(to_nanotime(*d), 'w');
  // Cancellation: a watcher goroutine expires the write deadline when ctx is done, which
  // wakes the connect (Go's netFD.connect does the same).
  chan<std::monostate> done = ctx.done();
  chan<std::monostate> stop;
  wait_group watcher;
  if (done) {
    stop = chan<std::monostate>(0);
    watcher.add(1);
    weft::go([nfd, done, stop, &watcher] {
      std::monostate v;
      if (weft::select(case_recv(done, v), case_recv(stop, v)) == 0) nfd->set_deadline(1, 'w');
      watcher.done();
    });
  }
  err = nfd->connect(sa, len);
  if (done) {
    stop.close();
    watcher.wait();
  }
  if (err) {
    if (ctx.err()) err = ctx.err() == context_errc::deadline_exceeded ? make_error_code(errc::timeout) : ctx.err();
    nfd->close();
    return {conn(), err};
  }
  nfd->set_deadline(0, 'w');
  return {conn_access::make(std::move(nfd)), {}};
}

}  // namespace

dial_result dial(std::string_view addr_text, const context& ctx) {
  std::error_code err;
  address a = parse_address(addr_text, err);
  if (err) return {conn(), err};
  if (ctx.err()) return {conn(), ctx.err()};
  sockaddr_storage ss;
  socklen_t len;
  if (a.is_unix) {
    to_sockaddr(a, ss, len);
    return dial_one(reinterpret_cast<sockaddr*>(&ss), len, ctx);
  }
  if (a.host.empty()) a.host = "127.0.0.1";  // Go dials the local system for ":port"
  if (to_sockaddr(a, ss, len)) return dial_one(reinterpret_cast<sockaddr*>(&ss), len, ctx);
  // A name: resolve with Asio's resolver, which calls getaddrinfo and may block the
  // thread for a long while, so it runs in blocking().
  std::vector<asio::ip::tcp::endpoint> eps;
  asio::error_code rerr;
  weft::blocking([&] {
    asio::io_context io;
    asio::ip::tcp::resolver r(io);
    for (const auto& e : r.resolve(a.host, std::to_string(a.port), rerr)) eps.push_back(e.endpoint());
  });
  if (rerr || eps.empty()) return {conn(), rerr ? std::error_code(rerr.value(), std::system_category()) : make_error_code(errc::bad_address)};
  dial_result first;
  for (std::size_t i = 0; i < eps.size(); i++) {
    dial_result r = dial_one(eps[i].data(), static_cast<socklen_t>(eps[i].size()), ctx);
    if (!r.err) return r;
    if (i == 0) first = std::move(r);
    if (ctx.err()) break;
  }
  return first;
}

dial_result dial(std::string_view address, std::chrono::nanoseconds timeout) {
  auto [ctx, cancel] = with_timeout(background(), timeout);
  dial_result r = dial(address, ctx);
  cancel();
  return r;
}

int64_t registered_descriptors() { return detail::poller_registered(); }

}  // namespace weft::net
