#include "netpoll/errors.h"

#include <cerrno>
#include <string>

namespace weft::net {
namespace {

class category : public std::error_category {
 public:
  const char* name() const noexcept override { return "weft.net"; }
  std::string message(int c) const override {
    switch (static_cast<errc>(c)) {
      case errc::timeout: return "i/o timeout";
      case errc::closed: return "use of closed network connection";
      case errc::refused: return "connection refused";
      case errc::reset: return "connection reset by peer";
      case errc::eof: return "EOF";
      case errc::unexpected_eof: return "unexpected EOF";
      case errc::bad_address: return "bad address";
    }
    return "network error";
  }
};

}  // namespace

const std::error_category& net_category() {
  static category c;
  return c;
}

std::error_code from_errno(int e) {
  switch (e) {
    case ECONNREFUSED: return errc::refused;
    case ECONNRESET: return errc::reset;
    default: return {e, std::system_category()};
  }
}

}  // namespace weft::net
