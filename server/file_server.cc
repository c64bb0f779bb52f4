// file_server: static files with Range and If-Modified-Since (net/http's FileServer,
// minus directory listings). All file system calls run in weft::blocking().
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <ctime>
#include <string>

#include "runtime/runtime.h"
#include "server/serve_mux.h"

namespace weft::http {

namespace {

std::string http_date(time_t t) {
  tm g;
  gmtime_r(&t, &g);
  char buf[64];
  strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &g);
  return buf;
}

bool parse_http_date(std::string_view s, time_t* out) {
  tm t{};
  std::string str(s);
  const char* end = strptime(str.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &t);
  if (!end || *end) return false;
  *out = timegm(&t);
  return true;
}

std::string_view content_type(std::string_view path) {
  auto dot = path.rfind('.');
  std::string_view ext = dot == std::string_view::npos ? "" : path.substr(dot + 1);
  if (ext == "html" || ext == "htm") return "text/html; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "js") return "text/javascript; charset=utf-8";
  if (ext == "json") return "application/json";
  if (ext == "txt") return "text/plain; charset=utf-8";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "png") return "image/png";
  if (ext == "jpg" || ext == "jpeg") return "image/jpeg";
  if (ext == "gif") return "image/gif";
  if (ext == "wasm") return "application/wasm";
  return "application/octet-stream";
}

// One range "bytes=a-b", "bytes=a-" or "bytes=-n". False: unsatisfiable or malformed.
bool parse_range(std::string_view h, uint64_t size, uint64_t* start, uint64_t* len) {
  if (h.rfind("bytes=", 0) != 0) return false;
  h.remove_prefix(6);
  if (h.find(',') != std::string_view::npos) return false;  // one range only
  auto dash = h.find('-');
  if (dash == std::string_view::npos) return false;
  std::string_view a = h.substr(0, dash), b = h.substr(dash + 1);
  uint64_t x = 0, y = 0;
  auto num = [](std::string_view s, uint64_t* v) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
    return ec == std::errc() && p == s.data() + s.size();
  };
  if (a.empty()) {  // suffix: the last y bytes
    if (!num(b, &y) || y == 0) return false;
    if (y > size) y = size;
    *start = size - y;
    *len = y;
    return size > 0;
  }
  if (!num(a, &x) || x >= size) return false;
  if (b.empty()) {
    y = size - 1;
  } else {
    if (!num(b, &y) || y < x) return false;
    if (y >= size) y = size - 1;
  }
  *start = x;
  *len = y - x + 1;
  return true;
}

}  // namespace

handler file_server(std::string root) {
  return [root = std::move(root)](response_writer& w, request& r) {
    if (r.method() != "GET" && r.method() != "HEAD") {
      w.set_header("Allow", "GET, HEAD");
      w.write_header(405);
      w.write("Method Not Allowed\n");
      return;
    }
    std::string rel = clean_path(r.path());  // no ".." can survive cleaning
    std::string path = root + rel;
    struct stat st{};
    int fd = -1;
    bool ok = blocking([&] {
      if (stat(path.c_str(), &st) != 0) return false;
      if (S_ISDIR(st.st_mode)) {
        path += (path.back() == '/' ? "" : "/");
        path += "index.html";
        if (stat(path.c_str(), &st) != 0) return false;
      }
      if (!S_ISREG(st.st_mode)) return false;
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      return fd >= 0;
    });
    if (!ok) {
      w.write_header(404);
      w.write("404 page not found\n");
      return;
    }
    struct closer {
      int fd;
      ~closer() { ::close(fd); }
    } guard{fd};
    auto size = static_cast<uint64_t>(st.st_size);
    w.set_header("Last-Modified", http_date(st.st_mtime));
    w.set_header("Content-Type", content_type(path));
    w.set_header("Accept-Ranges", "bytes");
    time_t since;
    if (parse_http_date(r.header("If-Modified-Since"), &since) && st.st_mtime <= since) {
      w.header().del("Content-Type");
      w.write_header(304);
      return;
    }
    uint64_t start = 0, len = size;
    std::string_view range = r.header("Range");
    int status = 200;
    if (!range.empty()) {
      if (!parse_range(range, size, &start, &len)) {
        w.set_header("Content-Range", "bytes */" + std::to_string(size));
        w.write_header(416);
        w.write("416 Requested Range Not Satisfiable\n");
        return;
      }
      status = 206;
      w.set_header("Content-Range", "bytes " + std::to_string(start) + "-" + std::to_string(start + len - 1) + "/" +
                                        std::to_string(size));
    }
    w.set_header("Content-Length", std::to_string(len));
    w.write_header(status);
    if (r.method() == "HEAD") return;
    std::string buf(64 * 1024, '\0');
    while (len > 0) {
      std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(len, buf.size()));
      ssize_t k = blocking([&] { return ::pread(fd, buf.data(), want, static_cast<off_t>(start)); });
      if (k <= 0) break;
      if (w.write(buf.data(), static_cast<std::size_t>(k))) break;
      start += static_cast<uint64_t>(k);
      len -= static_cast<uint64_t>(k);
    }
  };
}

}  // namespace weft::http
