// Network addresses: "host:port", "[v6]:port", ":port" (all interfaces), and Unix
// sockets as "unix:/path" or "/path". IP literals are parsed with Asio's address types;
// names are resolved by dial (netpoll/net.h).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

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

}  // namespace weft::net
