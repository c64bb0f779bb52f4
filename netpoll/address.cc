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

}  // namespace weft::net
