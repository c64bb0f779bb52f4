#include "netpoll/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <asio/ip/address.hpp>
#include <charconv>
#include <cstring>

#include "netpoll/errors.h"

namespace weft::net {

address parse_address(std::string_view s, std::error_code& err) {
  err.clear();
  address a;
  if (s.rfind("unix:", 0) == 0 || (!s.empty() && s[0] == '/')) {
    a.is_unix = true;
    a.path = std::string(s.rfind("unix:", 0) == 0 ? s.substr(5) : s);
    if (a.path.empty() || a.path.size() >= sizeof(sockaddr_un::sun_path)) err = errc::bad_address;
    return a;
  }
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos) {
    err = errc::bad_address;  // missing port
    return {};
  }
  std::string_view host = s.substr(0, colon);
  std::string_view port = s.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    err = errc::bad_address;  // an IPv6 literal needs brackets
    return {};
  }
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p > 65535) {
    err = errc::bad_address;
    return {};
  }
  a.host = std::string(host);
  a.port = static_cast<uint16_t>(p);
  return a;
}

bool to_sockaddr(const address& a, sockaddr_storage& ss, socklen_t& len) {
  std::memset(&ss, 0, sizeof ss);
  if (a.is_unix) {
    auto* un = reinterpret_cast<sockaddr_un*>(&ss);
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, a.path.data(), a.path.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.path.size() + 1);
    return true;
  }
  asio::error_code ec;
  asio::ip::address ip = asio::ip::make_address(a.host, ec);
  if (ec) return false;
  if (ip.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(a.port);
    auto bytes = ip.to_v4().to_bytes();
    std::memcpy(&in->sin_addr, bytes.data(), bytes.size());
    len = sizeof(sockaddr_in);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(a.port);
    auto v6 = ip.to_v6();
    auto bytes = v6.to_bytes();
    std::memcpy(&in6->sin6_addr, bytes.data(), bytes.size());
    in6->sin6_scope_id = v6.scope_id();
    len = sizeof(sockaddr_in6);
  }
  return true;
}

std::string format_sockaddr(const sockaddr* sa, socklen_t len) {
  if (!sa || len == 0) return "";
  if (sa->sa_family == AF_UNIX) {
    auto* un = reinterpret_cast<const sockaddr_un*>(sa);
    std::size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    std::string p(un->sun_path, strnlen(un->sun_path, n));
    return p;
  }
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    asio::ip::address_v4::bytes_type b;
    std::memcpy(b.data(), &in->sin_addr, b.size());
    return asio::ip::address_v4(b).to_string() + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), &in6->sin6_addr, b.size());
    return "[" + asio::ip::address_v6(b, in6->sin6_scope_id).to_string() + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "?";
}

namespace {

// Parses an address literal (no port) into 4 or 16 bytes; IPv4-mapped IPv6 becomes IPv4.
bool parse_ip(std::string_view text, bool& v6, unsigned char* bytes) {
  asio::error_code ec;
  asio::ip::address ip = asio::ip::make_address(std::string(text), ec);
  if (ec) return false;
  if (ip.is_v6() && ip.to_v6().is_v4_mapped()) ip = asio::ip::make_address_v4(asio::ip::v4_mapped, ip.to_v6());
  v6 = ip.is_v6();
  if (v6) {
    auto b = ip.to_v6().to_bytes();
    std::memcpy(bytes, b.data(), b.size());
  } else {
    auto b = ip.to_v4().to_bytes();
    std::memcpy(bytes, b.data(), b.size());
  }
  return true;
}

// The address part of "1.2.3.4:80", "[::1]:80", or a bare literal.
std::string_view host_part(std::string_view s) {
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    return close == std::string_view::npos ? s : s.substr(1, close - 1);
  }
  auto colon = s.find(':');
  if (colon != std::string_view::npos && s.find(':', colon + 1) == std::string_view::npos) return s.substr(0, colon);
  return s;  // a bare IPv6 literal, or a bare IPv4 one
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool ip_prefix::contains(std::string_view ip) const {
  bool is_v6 = false;
  unsigned char b[16];
  if (!parse_ip(host_part(ip), is_v6, b) || is_v6 != v6) return false;
  int full = bits / 8, rest = bits % 8;
  if (std::memcmp(b, bytes, static_cast<std::size_t>(full)) != 0) return false;
  if (rest == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (b[full] & mask) == (bytes[full] & mask);
}

bool parse_prefix_list(std::string_view list, std::vector<ip_prefix>& out, std::string* err) {
  out.clear();
  while (!list.empty()) {
    auto comma = list.find(',');
    std::string_view entry = trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (entry.empty()) continue;
    ip_prefix p;
    std::string_view addr = entry;
    int bits = -1;
    if (auto slash = entry.find('/'); slash != std::string_view::npos) {
      addr = entry.substr(0, slash);
      std::string_view len = entry.substr(slash + 1);
      int n = 0;
      auto [ptr, ec] = std::from_chars(len.data(), len.data() + len.size(), n);
      if (len.empty() || ec != std::errc() || ptr != len.data() + len.size()) {
        if (err) *err = "bad prefix length in \"" + std::string(entry) + "\"";
        return false;
      }
      bits = n;
    }
    if (!parse_ip(addr, p.v6, p.bytes)) {
      if (err) *err = "\"" + std::string(entry) + "\" is not an IP address or CIDR prefix";
      return false;
    }
    int max = p.v6 ? 128 : 32;
    if (bits < 0) bits = max;
    if (bits > max) {
      if (err) *err = "prefix length " + std::to_string(bits) + " is too long in \"" + std::string(entry) + "\"";
      return false;
    }
    p.bits = bits;
    out.push_back(p);
  }
  return true;
}

bool prefix_list_contains(const std::vector<ip_prefix>& list, std::string_view ip) {
  for (const auto& p : list)
    if (p.contains(ip)) return true;
  return false;
}

}  // namespace weft::net
