// A weftd child process and a blocking raw-socket client, for the integration tests.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_util.h"

extern char** environ;

namespace weft::testing {

using namespace std::chrono_literals;

// Polls pred on this (plain) thread every 10 ms until it holds or `limit` passes, and
// says whether it held: the seam for what another process does (a log line, a count on
// /metrics). Goroutine tests wait on channels instead.
template <class Pred>
bool poll_for(Pred pred, std::chrono::milliseconds limit = 10s) {
  for (auto give_up = std::chrono::steady_clock::now() + limit;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(10ms);
  }
}

// A weftd child process. Its stderr goes to a file; the address is read from the
// "serving on" line.
struct weftd {
  pid_t pid = -1;
  std::string addr;
  std::string log_path;
  int exit_status = -1;

  explicit weftd(std::vector<std::string> args, std::vector<std::string> env_extra = {}) {
    static int seq = 0;
    log_path = "/tmp/weftd-test-" + std::to_string(getpid()) + "-" + std::to_string(seq++) + ".log";
    std::vector<std::string> argv_s = {WEFTD_BIN};
    bool has_listen = false;
    for (auto& a : args) has_listen |= a.rfind("--listen", 0) == 0;
    if (!has_listen) {
      argv_s.push_back("--listen");
      argv_s.push_back("127.0.0.1:0");
    }
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_s;
    for (char** e = environ; *e; e++)
      if (std::string(*e).rfind("WEFTD_", 0) != 0) env_s.push_back(*e);
    env_s.insert(env_s.end(), env_extra.begin(), env_extra.end());
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, (log_path + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data()) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    // Wait for the serving line (or an early exit), by the clock: a sanitized start on a
    // loaded machine can take seconds.
    poll_for([&] {
      std::string log = read_log();
      std::smatch m;
      if (std::regex_search(log, m, std::regex("serving on ([0-9.:\\[\\]]+)"))) addr = m[1];
      int st;
      if (addr.empty() && pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
        exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        pid = -1;
      }
      return !addr.empty() || pid < 0;
    }, 30s);
  }
  ~weftd() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    unlink(log_path.c_str());
    unlink((log_path + ".out").c_str());
  }
  std::string read_log(const std::string& suffix = "") const {
    std::ifstream f(log_path + suffix);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  std::string url(const std::string& path) const { return "http://" + addr + path; }
  int stop(int sig = SIGTERM, std::chrono::seconds limit = 30s) {
    if (pid <= 0) return exit_status;
    kill(pid, sig);
    return wait_exit(limit);
  }
  // Waits for an exit already under way (after a signal the test sent); -1 on timeout.
  int wait_exit(std::chrono::seconds limit) {
    if (pid <= 0) return exit_status;
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      int st;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        // A failing exit is explained by weftd's log (a sanitizer report lands there too).
        if (exit_status != 0) std::fprintf(stderr, "weftd exited %d; its log:\n%s\n", exit_status, read_log().c_str());
        return exit_status;
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }
};

// A blocking raw socket client (the test thread is not a goroutine here).
struct sock {
  int fd = -1;
  explicit sock(const std::string& addr) {
    auto colon = addr.rfind(':');
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(std::stoi(addr.substr(colon + 1))));
    inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      close(fd);
      fd = -1;
    }
  }
  ~sock() {
    if (fd >= 0) close(fd);
  }
  void send(const std::string& s) { ::send(fd, s.data(), s.size(), MSG_NOSIGNAL); }
  // Everything until the peer closes or `quiet` passes with no data.
  std::string recv_all(std::chrono::milliseconds quiet = 2000ms) {
    std::string out;
    char buf[8192];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(quiet.count())) <= 0) break;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
};

}  // namespace weft::testing
