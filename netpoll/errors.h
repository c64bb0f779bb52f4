// Network errors: std::error_code values in weft's `net` category for the outcomes
// callers test for, and the system category (errno) for everything else.
//
//   timeout   a deadline passed (Go's os.ErrDeadlineExceeded; net.Error.Timeout())
//   closed    use of a closed connection or listener (Go's net.ErrClosed)
//   refused   connection refused (ECONNREFUSED)
//   reset     connection reset by peer (ECONNRESET)
//   eof       the peer closed its side (Go's io.EOF): read returns n == 0 and this
//   unexpected_eof   read_full got fewer bytes than asked (io.ErrUnexpectedEOF)
//
// Compare with the enum: `if (err == weft::net::errc::timeout)`.
#pragma once

#include <system_error>
#include <type_traits>

namespace weft::net {

enum class errc { timeout = 1, closed, refused, reset, eof, unexpected_eof, bad_address };

const std::error_category& net_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), net_category()}; }

// errno -> error_code: the named ones map to errc, the rest to the system category.
std::error_code from_errno(int e);

}  // namespace weft::net

template <>
struct std::is_error_code_enum<weft::net::errc> : std::true_type {};
