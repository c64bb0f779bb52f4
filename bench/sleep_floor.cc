// sleep_floor: the least a server can do for the sleep10 workload, to measure what the
// load generator and the kernel allow on this machine in the same run as weftd.
//
// docs/benchmarks.md puts sleep10_rps's limit at 100,000 (1,000 connections, 10 ms each),
// but a single wrk thread and loopback TCP on 2 shared cores cannot drive any server that
// fast. This program answers with nothing in its way: each thread owns a SO_REUSEPORT
// listener and an epoll set, reads a request, and answers it 10 ms later from a FIFO of
// deadlines (all delays are equal, so arrival order is deadline order), with a response
// as long as weftd's. No HTTP parsing, no goroutines, no contexts, no allocation per
// request. bench/http_bench.sh prints its sleep10_rps next to weftd's and the ratio.
//
// It serves exactly that workload: GET requests without a body, one in flight per
// connection (wrk without a pipelining script). Anything else is not its job.
//
//   sleep_floor [--port N] [--threads N] [--delay-ms N]     (18083, 2, 10)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// As long as weftd's /sleep?ms=10 answer, byte for byte (the Date is refreshed each
// second, as weftd does).
std::string response(int delay_ms) {
  char date[64];
  std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  std::string body = "slept " + std::to_string(delay_ms) + "ms\n";
  return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nDate: " + date + "\r\nServer: floor\r\n\r\n" + body;
}

int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 4096) != 0) {
    std::fprintf(stderr, "sleep_floor: 127.0.0.1:%d: %s\n", port, std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

struct pending {
  int64_t due;
  int fd;
};

void serve(int port, int delay_ms) {
  const int64_t delay = int64_t{delay_ms} * 1000000;
  int ls = listen_on(port);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = ls;
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  std::deque<pending> queue;
  std::string resp = response(delay_ms);
  std::time_t resp_second = std::time(nullptr);
  epoll_event events[256];
  char buf[4096];
  for (;;) {
    int64_t now = now_ns();
    if (!queue.empty() && queue.front().due <= now) {
      if (std::time_t t = std::time(nullptr); t != resp_second) {
        resp = response(delay_ms);
        resp_second = t;
      }
      while (!queue.empty() && queue.front().due <= now) {
        // A closed or broken connection just fails the send; it was closed on read.
        send(queue.front().fd, resp.data(), resp.size(), MSG_NOSIGNAL);
        queue.pop_front();
      }
    }
    timespec timeout{};
    timespec* tp = nullptr;
    if (!queue.empty()) {
      int64_t d = queue.front().due - now;
      if (d < 0) d = 0;
      timeout = {static_cast<time_t>(d / 1000000000), static_cast<long>(d % 1000000000)};
      tp = &timeout;
    }
    int n = epoll_pwait2(ep, events, 256, tp, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("sleep_floor: epoll_pwait2");
      std::exit(1);
    }
    now = now_ns();
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          int one = 1;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r > 0) {
        queue.push_back({now + delay, fd});
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        // Answers still queued for fd go nowhere; wrk does not close mid-request.
        for (auto& p : queue)
          if (p.fd == fd) p.fd = -1;
        close(fd);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int port = 18083, threads = 2, delay_ms = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view k = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (k == "--port") port = v;
    else if (k == "--threads") threads = v;
    else if (k == "--delay-ms") delay_ms = v;
    else {
      std::fprintf(stderr, "usage: sleep_floor [--port N] [--threads N] [--delay-ms N]\n");
      return 2;
    }
  }
  if (argc % 2 == 0 || port <= 0 || threads <= 0 || delay_ms < 0) {
    std::fprintf(stderr, "usage: sleep_floor [--port N] [--threads N] [--delay-ms N]\n");
    return 2;
  }
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; i++) ts.emplace_back(serve, port, delay_ms);
  for (auto& t : ts) t.join();
}
