// Small pieces of weft::http: header lists, status texts, URL decoding, the error
// category.
#include <cstdint>
#include <cstring>
#include <string>

#include "server/http.h"

namespace weft::http {

bool iequals(std::string_view a, std::string_view b) {
  std::size_t n = a.size();
  if (n != b.size()) return false;
  // Eight bytes at a time while they match exactly (header names nearly always come in
  // the same case as the name asked for); a differing word is folded byte by byte.
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a.data() + i, 8);
    std::memcpy(&y, b.data() + i, 8);
    if (x != y) break;
  }
  for (; i < n; i++) {
    char x = a[i], y = b[i];
    if (x == y) continue;
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

const header_field* headers::find(std::string_view name) const {
  for (std::size_t i = 0; i < n_; i++)
    if (iequals(f_[i].name, name)) return &f_[i];
  return nullptr;
}

std::string_view headers::get(std::string_view name) const {
  const header_field* f = find(name);
  return f ? std::string_view(f->value) : std::string_view();
}

bool headers::has(std::string_view name) const { return find(name) != nullptr; }

void headers::set(std::string_view name, std::string_view value) {
  del(name);
  add(name, value);
}

void headers::add(std::string_view name, std::string_view value) {
  if (n_ == f_.size()) {
    f_.push_back({std::string(name), std::string(value)});
  } else {
    f_[n_].name.assign(name);
    f_[n_].value.assign(value);
  }
  n_++;
}

void headers::del(std::string_view name) {
  std::size_t o = 0;
  for (std::size_t i = 0; i < n_; i++)
    if (!iequals(f_[i].name, name)) {
      if (o != i) std::swap(f_[o], f_[i]);  // the removed field's storage becomes a spare
      o++;
    }
  n_ = o;
}

std::string_view status_text(int code) {
  switch (code) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Request Entity Too Large";
    case 414: return "Request URI Too Long";
    case 416: return "Requested Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
  }
  return "";
}

namespace {

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class category : public std::error_category {
 public:
  const char* name() const noexcept override { return "weft.http"; }
  std::string message(int c) const override {
    switch (static_cast<errc>(c)) {
      case errc::body_too_large: return "http: request body too large";
      case errc::handler_timeout: return "http: Handler timeout";
      case errc::header_too_large: return "http: request header too large";
    }
    return "http error";
  }
};

}  // namespace

const std::error_category& http_category() {
  static category c;
  return c;
}

// Percent-decoding; plus_is_space for query strings. False on a bad escape.
bool url_decode(std::string_view in, std::string& out, bool plus_is_space) {
  out.clear();
  std::size_t i = 0;
  while (i < in.size()) {
    // A run with nothing to decode is copied whole (most paths and queries are one run).
    std::size_t j = i;
    while (j < in.size() && in[j] != '%' && !(plus_is_space && in[j] == '+')) j++;
    out.append(in.data() + i, j - i);
    if (j == in.size()) break;
    if (in[j] == '+') {
      out.push_back(' ');
      i = j + 1;
      continue;
    }
    if (j + 2 >= in.size()) return false;
    int h = hexval(in[j + 1]), l = hexval(in[j + 2]);
    if (h < 0 || l < 0) return false;
    out.push_back(static_cast<char>(h * 16 + l));
    i = j + 3;
  }
  return true;
}

std::string request::query(std::string_view key) const {
  std::string_view q = query_;
  std::string k, v;
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    auto eq = pair.find('=');
    std::string_view raw_key = pair.substr(0, eq);
    bool plain = raw_key.find_first_of("%+") == std::string_view::npos;  // decodes to itself
    if (plain ? raw_key == key : url_decode(raw_key, k, true) && k == key) {
      if (eq == std::string_view::npos) return "";
      if (url_decode(pair.substr(eq + 1), v, true)) return v;
      return "";
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return "";
}

std::string_view request::path_value(std::string_view name) const {
  for (const auto& [k, v] : path_values_)
    if (k == name) return v;
  return {};
}

void request::set_path_value(std::string name, std::string value) {
  for (auto& [k, v] : path_values_)
    if (k == name) {
      v = std::move(value);
      return;
    }
  path_values_.emplace_back(std::move(name), std::move(value));
}

}  // namespace weft::http
