// Network addresses: "host:port", "[v6]:port", ":port" (all interfaces), and Unix
// sockets as "unix:/path" or "/path". IP literals are parsed with Asio's address types;
// names are resolved by dial (netpoll/net.h).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace weft::net {

struct address {
  bool is_unix = false;
  std::string host;  // empty: all interfaces (listen)
  uint16_t port = 0;
  std::string path;  // Unix socket path
};

// Parses s; bad input gives errc::bad_address with no partial result.
address parse_address(std::string_view s, std::error_code& err);

// A socket address for an IP literal host (no name resolution).
bool to_sockaddr(const address& a, sockaddr_storage& ss, socklen_t& len);
// "1.2.3.4:80", "[::1]:80", "/tmp/sock".
std::string format_sockaddr(const sockaddr* sa, socklen_t len);

// An IP network in CIDR notation ("10.0.0.0/8", "::1/128"), for allow lists. IPv4
// addresses seen as IPv4-mapped IPv6 (::ffff:a.b.c.d) match IPv4 prefixes.
struct ip_prefix {
  bool v6 = false;
  unsigned char bytes[16] = {};
  int bits = 0;

  // ip: an address literal, or "host:port" / "[v6]:port" as remote addresses print.
  bool contains(std::string_view ip) const;
};

// "127.0.0.0/8, ::1/128" (a bare address is a single host). On a bad entry returns false
// and says which one and why in *err.
bool parse_prefix_list(std::string_view list, std::vector<ip_prefix>& out, std::string* err);
bool prefix_list_contains(const std::vector<ip_prefix>& list, std::string_view ip);

}  // namespace weft::net
