// A raw HTTP/1.1 test client over weft::net: sends bytes exactly as given and parses the
// responses that come back (Content-Length, chunked, or until close).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "netpoll/net.h"
#include "server/http.h"

namespace weft::testing {

struct http_response {
  int status = 0;
  std::string status_line;
  http::headers headers;
  std::string body;
  bool complete = false;
};

class raw_client {
 public:
  explicit raw_client(const std::string& addr) {
    auto r = net::dial(addr, std::chrono::seconds(5));
    EXPECT_FALSE(r.err) << r.err.message();
    c_ = r.c;
    c_.set_read_deadline(std::chrono::steady_clock::now() + std::chrono::seconds(10));
  }
  ~raw_client() { c_.close(); }
  net::conn& conn() { return c_; }

  bool send(std::string_view bytes) { return !c_.write(bytes).err; }

  // Reads one response; HEAD responses have no body whatever their headers say.
  http_response read_response(bool head = false) {
    http_response r;
    std::string line;
    if (!read_line(line)) return r;
    r.status_line = line;
    if (line.size() >= 12) r.status = std::stoi(line.substr(9, 3));
    for (;;) {
      if (!read_line(line)) return r;
      if (line.empty()) break;
      auto colon = line.find(':');
      std::string name = line.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      while (!value.empty() && value[0] == ' ') value.erase(0, 1);
      r.headers.add(name, value);
    }
    if (r.status == 100) {  // an interim response: the caller reads the final one next
      r.complete = true;
      return r;
    }
    if (head || r.status == 204 || r.status == 304) {
      r.complete = true;
      return r;
    }
    std::string_view te = r.headers.get("Transfer-Encoding");
    std::string_view cl = r.headers.get("Content-Length");
    if (te == "chunked") {
      for (;;) {
        if (!read_line(line)) return r;
        std::size_t n = std::stoul(line, nullptr, 16);
        if (n == 0) {
          read_line(line);
          break;
        }
        std::string chunk;
        if (!read_n(n, chunk)) return r;
        r.body += chunk;
        read_line(line);
      }
    } else if (!cl.empty()) {
      if (!read_n(std::stoul(std::string(cl)), r.body)) return r;
    } else {
      std::string rest;
      read_to_eof(rest);
      r.body = rest;
    }
    r.complete = true;
    return r;
  }

  // True if the server closed the connection (read sees EOF or reset soon).
  bool closed_by_server() {
    if (buf_.size() > pos_) return false;
    char b;
    auto r = c_.read(&b, 1);
    return r.err && r.err != net::errc::timeout;
  }

 private:
  bool fill() {
    char tmp[4096];
    auto r = c_.read(tmp, sizeof tmp);
    if (r.n) buf_.append(tmp, r.n);
    return r.n > 0;
  }
  bool read_line(std::string& line) {
    for (;;) {
      auto nl = buf_.find("\r\n", pos_);
      if (nl != std::string::npos) {
        line = buf_.substr(pos_, nl - pos_);
        pos_ = nl + 2;
        return true;
      }
      if (!fill()) return false;
    }
  }
  bool read_n(std::size_t n, std::string& out) {
    while (buf_.size() - pos_ < n)
      if (!fill()) return false;
    out = buf_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  void read_to_eof(std::string& out) {
    while (fill()) {
    }
    out = buf_.substr(pos_);
    pos_ = buf_.size();
  }
  net::conn c_;
  std::string buf_;
  std::size_t pos_ = 0;
};

}  // namespace weft::testing
