// serve_mux; see server/serve_mux.h.
#include "server/serve_mux.h"

#include <algorithm>
#include <cctype>
#include <span>
#include <stdexcept>

namespace weft::http {

namespace {

using seg = serve_mux::segment;

// How two patterns relate, for precedence and conflicts.
enum class rel { equal, first_more, second_more, disjoint, conflict };

rel combine(rel here, rel rest) {
  if (rest == rel::disjoint || rest == rel::conflict) return rest;
  if (here == rel::equal) return rest;
  if (rest == rel::equal || rest == here) return here;
  return rel::conflict;  // each more specific somewhere: overlapping, unordered
}

rel path_rel(const std::vector<seg>& p, std::size_t i, const std::vector<seg>& q, std::size_t j) {
  bool pend = i == p.size(), qend = j == q.size();
  if (pend && qend) return rel::equal;
  bool pmulti = !pend && p[i].kind == seg::multi;
  bool qmulti = !qend && q[j].kind == seg::multi;
  if (pmulti && qmulti) return rel::equal;
  if (pmulti) return rel::second_more;  // p absorbs q's remainder
  if (qmulti) return rel::first_more;
  if (pend || qend) return rel::disjoint;
  const seg& a = p[i];
  const seg& b = q[j];
  rel here;
  if (a.kind == seg::literal && b.kind == seg::literal) {
    if (a.text != b.text) return rel::disjoint;
    here = rel::equal;
  } else if (a.kind == seg::literal) {
    here = rel::first_more;
  } else if (b.kind == seg::literal) {
    here = rel::second_more;
  } else {
    here = rel::equal;
  }
  return combine(here, path_rel(p, i + 1, q, j + 1));
}

rel method_rel(const std::string& a, const std::string& b) {
  if (a == b) return rel::equal;
  if (a.empty()) return rel::second_more;
  if (b.empty()) return rel::first_more;
  // GET also serves HEAD: a HEAD pattern is the more specific of the two for HEAD.
  if (a == "HEAD" && b == "GET") return rel::first_more;
  if (a == "GET" && b == "HEAD") return rel::second_more;
  return rel::disjoint;
}

rel route_rel(const serve_mux::route& a, const serve_mux::route& b) {
  if (a.host != b.host) {
    if (!a.host.empty() && !b.host.empty()) return rel::disjoint;
    // Go's exception: with and without a host never conflict; the host wins.
    return a.host.empty() ? rel::second_more : rel::first_more;
  }
  rel m = method_rel(a.method, b.method);
  if (m == rel::disjoint) return rel::disjoint;
  rel p = path_rel(a.segs, 0, b.segs, 0);
  if (p == rel::disjoint || p == rel::conflict) return p;
  if (m == rel::equal) return p;  // equal here is a duplicate
  if (p == rel::equal) return m;
  return m == p ? m : rel::conflict;
}

bool valid_method(std::string_view m) {
  if (m.empty()) return false;
  for (char c : m)
    if (!(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') && c != '-') return false;
  return true;
}

bool valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return !std::isdigit(static_cast<unsigned char>(n[0]));
}

std::unique_ptr<serve_mux::route> parse_pattern(std::string_view pat) {
  auto rp = std::make_unique<serve_mux::route>();
  serve_mux::route& r = *rp;
  r.pattern = std::string(pat);
  auto bad = [&](const std::string& why) { throw std::invalid_argument("serve_mux: pattern \"" + r.pattern + "\": " + why); };
  std::string_view rest = pat;
  auto sp = rest.find_first_of(" \t");
  if (sp != std::string_view::npos) {
    std::string_view m = rest.substr(0, sp);
    if (!valid_method(m)) bad("bad method");
    r.method = std::string(m);
    rest = rest.substr(sp);
    while (!rest.empty() && (rest[0] == ' ' || rest[0] == '\t')) rest.remove_prefix(1);
  }
  auto slash = rest.find('/');
  if (slash == std::string_view::npos) bad("missing /");
  r.host = std::string(rest.substr(0, slash));
  std::string_view path = rest.substr(slash);
  if (path.find("//") != std::string_view::npos) bad("empty path segment");
  // Segments after the leading slash; a trailing slash is a subtree.
  std::string_view p = path.substr(1);
  std::vector<std::string> names;
  while (true) {
    auto next = p.find('/');
    std::string_view s = p.substr(0, next);
    bool last = next == std::string_view::npos;
    if (last && s.empty()) {
      r.segs.push_back({seg::multi, ""});  // trailing slash: everything below
      break;
    }
    if (s.front() == '{') {
      if (s.back() != '}') bad("bad wildcard segment (must be a whole segment)");
      std::string_view name = s.substr(1, s.size() - 2);
      if (name == "$") {
        if (!last) bad("{$} not at end");
        r.segs.push_back({seg::literal, ""});  // exactly the trailing slash
        break;
      }
      bool multi = name.size() > 3 && name.substr(name.size() - 3) == "...";
      if (multi) name = name.substr(0, name.size() - 3);
      if (!valid_name(name)) bad("bad wildcard name");
      for (const auto& n : names)
        if (n == name) bad("duplicate wildcard name");
      names.emplace_back(name);
      if (multi) {
        if (!last) bad("{" + std::string(name) + "...} wildcard not at end");
        r.segs.push_back({seg::multi, std::string(name)});
        break;
      }
      r.segs.push_back({seg::wild, std::string(name)});
    } else {
      if (s.find('{') != std::string_view::npos || s.find('}') != std::string_view::npos)
        bad("bad wildcard segment (must be a whole segment)");
      r.segs.push_back({seg::literal, std::string(s)});
    }
    if (last) break;
    p = p.substr(next + 1);
  }
  return rp;
}

// A path's segments after its leading slash ("/" is one empty segment), held inline up
// to 16 of them, so that routing allocates nothing for ordinary paths. clean: no empty
// segment but a trailing one, no "." or ".." (the path is its own clean_path()).
class path_segments {
 public:
  explicit path_segments(std::string_view path) {
    std::size_t n = static_cast<std::size_t>(std::count(path.begin(), path.end(), '/'));
    std::string_view* out = inline_;
    if (n > kInline) {
      heap_.resize(n);
      out = heap_.data();
    }
    std::string_view p = path.substr(1);
    for (std::size_t i = 0; i < n; i++) {
      auto next = p.find('/');
      std::string_view s = p.substr(0, next);
      out[i] = s;
      if ((s.empty() && i + 1 < n) || s == "." || s == "..") clean_ = false;
      if (next == std::string_view::npos) break;
      p = p.substr(next + 1);
    }
    parts_ = {out, n};
  }
  path_segments(const path_segments&) = delete;
  std::span<const std::string_view> parts() const { return parts_; }
  bool clean() const { return clean_; }

 private:
  static constexpr std::size_t kInline = 16;
  std::string_view inline_[kInline];
  std::vector<std::string_view> heap_;
  std::span<const std::string_view> parts_;
  bool clean_ = true;
};

// Matches a route's path against request segments, capturing wildcards.
bool match_path(const serve_mux::route& r, std::span<const std::string_view> parts, std::string_view path,
                std::vector<std::pair<std::string, std::string>>* values) {
  std::size_t i = 0;
  for (; i < r.segs.size(); i++) {
    const seg& s = r.segs[i];
    if (s.kind == seg::multi) {
      if (values && !s.text.empty()) {
        // The remainder of the path, from segment i.
        std::size_t off = 1;
        for (std::size_t k = 0; k < i; k++) off += parts[k].size() + 1;
        values->emplace_back(s.text, std::string(off <= path.size() ? path.substr(off) : ""));
      }
      return i < parts.size();  // "/a/" and "/a/{x...}" need the slash: not "/a"
    }
    if (i >= parts.size()) return false;
    if (s.kind == seg::literal) {
      if (parts[i] != s.text) return false;
    } else {
      if (parts[i].empty()) return false;  // {x} needs a non-empty segment
      if (values) values->emplace_back(s.text, std::string(parts[i]));
    }
  }
  return i == parts.size();
}

bool method_matches(const std::string& pattern_method, std::string_view m) {
  return pattern_method.empty() || pattern_method == m || (pattern_method == "GET" && m == "HEAD");
}

std::string_view host_without_port(std::string_view h) {
  if (!h.empty() && h[0] == '[') {
    auto e = h.find(']');
    return e == std::string_view::npos ? h : h.substr(0, e + 1);
  }
  auto c = h.rfind(':');
  return c == std::string_view::npos ? h : h.substr(0, c);
}

}  // namespace

std::string clean_path(std::string_view p) {
  if (p.empty()) return "/";
  bool trailing = p.size() > 1 && p.back() == '/';
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < p.size()) {
    while (i < p.size() && p[i] == '/') i++;
    std::size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view s = p.substr(i, j - i);
    if (s == "..") {
      if (!out.empty()) out.pop_back();
    } else if (!s.empty() && s != ".") {
      out.push_back(s);
    }
    i = j;
  }
  std::string r = "/";
  for (std::size_t k = 0; k < out.size(); k++) {
    if (k) r += '/';
    r += out[k];
  }
  if (trailing && r != "/") r += '/';
  return r;
}

void serve_mux::handle(std::string_view pattern, handler h, route_options opts) {
  if (!h) throw std::invalid_argument("serve_mux: nil handler for \"" + std::string(pattern) + "\"");
  std::unique_ptr<route> rp = parse_pattern(pattern);
  route& r = *rp;
  r.h = std::move(h);
  if (opts.timeout) r.timeout_ns.store(opts.timeout->count());
  for (const auto& op : routes_) {
    const route& o = *op;
    rel x = route_rel(r, o);
    if (x == rel::equal)
      throw std::invalid_argument("serve_mux: pattern \"" + r.pattern + "\" is a duplicate of \"" + o.pattern + "\"");
    if (x == rel::conflict)
      throw std::invalid_argument("serve_mux: pattern \"" + r.pattern + "\" conflicts with \"" + o.pattern +
                                  "\": both match some requests and neither is more specific");
  }
  r.metrics = std::make_unique<route_metrics>(r.pattern);
  r.labels = weft::detail::interned_label_ref({{"route", r.pattern}});
  routes_.push_back(std::move(rp));
  index_routes();
}

// Groups the routes by the literal first segment they need; a route whose first segment
// is a wildcard (or a subtree) can match any first segment and joins every group.
void serve_mux::index_routes() {
  auto literal_first = [](const route& r) { return !r.segs.empty() && r.segs[0].kind == seg::literal; };
  by_first_.clear();
  any_first_.clear();
  exact_.clear();
  any_host_ = false;
  for (const auto& r : routes_) {
    any_host_ |= !r->host.empty();
    std::string path;
    bool exact = true;
    for (const seg& s : r->segs) {
      exact &= s.kind == seg::literal && s.text != "." && s.text != "..";
      path += "/" + s.text;
    }
    if (exact && r->host.empty()) exact_[path].push_back(r.get());
  }
  for (const auto& r : routes_)
    if (literal_first(*r)) by_first_.try_emplace(r->segs[0].text);
  for (const auto& r : routes_) {
    if (literal_first(*r)) {
      by_first_[r->segs[0].text].push_back(r.get());
    } else {
      any_first_.push_back(r.get());
      for (auto& [first, list] : by_first_) list.push_back(r.get());
    }
  }
}

bool serve_mux::set_route_timeout(std::string_view pattern, std::optional<std::chrono::nanoseconds> timeout) {
  for (auto& r : routes_)
    if (r->pattern == pattern) {
      r->timeout_ns.store(timeout ? timeout->count() : -1, std::memory_order_relaxed);
      return true;
    }
  return false;
}

std::vector<std::string> serve_mux::patterns() const {
  std::vector<std::string> v;
  for (const auto& r : routes_) v.push_back(r->pattern);
  return v;
}

const serve_mux::route* serve_mux::route_for(response_writer& w, request& r) const {
  std::string_view path = r.path();
  if (path.empty() || path[0] != '/') {
    w.set_header("Connection", "close");
    w.write_header(400);
    w.write("400 Bad Request\n");
    return nullptr;
  }
  if (!any_host_) {
    if (auto it = exact_.find(path); it != exact_.end()) {
      const route* best = nullptr;
      for (const route* rt : it->second)
        if (method_matches(rt->method, r.method()) && (!best || route_rel(*rt, *best) == rel::first_more)) best = rt;
      if (best) return best;  // otherwise the full search, for 405's Allow list
    }
  }
  path_segments segs(path);
  if (!segs.clean() && r.method() != "CONNECT") {
    std::string clean = clean_path(path);
    if (clean != path) {
      std::string loc = clean;
      if (!r.raw_query().empty()) loc += "?" + std::string(r.raw_query());
      w.set_header("Location", loc);
      w.write_header(301);
      return nullptr;
    }
  }
  std::span<const std::string_view> parts = segs.parts();
  std::string_view host = host_without_port(r.host());
  const route* best = nullptr;
  std::vector<std::string> allow;
  // Only the routes that can match this first segment, in registration order.
  auto it = by_first_.find(parts[0]);
  for (const route* rtp : it != by_first_.end() ? it->second : any_first_) {
    const route& rt = *rtp;
    if (!rt.host.empty() && rt.host != host) continue;
    if (!match_path(rt, parts, path, nullptr)) continue;
    if (!method_matches(rt.method, r.method())) {
      std::string m = rt.method;
      for (const std::string& x : m == "GET" ? std::vector<std::string>{"GET", "HEAD"} : std::vector<std::string>{m})
        if (std::find(allow.begin(), allow.end(), x) == allow.end()) allow.push_back(x);
      continue;
    }
    if (!best || route_rel(rt, *best) == rel::first_more) best = &rt;
  }
  if (!best) {
    if (!allow.empty()) {
      std::sort(allow.begin(), allow.end());
      std::string a;
      for (const auto& m : allow) a += (a.empty() ? "" : ", ") + m;
      w.set_header("Allow", a);
      w.write_header(405);
      w.write("Method Not Allowed\n");
      return nullptr;
    }
    // "/a" with only "/a/" registered: redirect to the subtree.
    std::string with_slash = std::string(path) + "/";
    path_segments with_slash_segs(with_slash);
    std::span<const std::string_view> sp = with_slash_segs.parts();
    for (const auto& rtp : routes_) {
      const route& rt = *rtp;
      if (!rt.host.empty() && rt.host != host) continue;
      if (!rt.segs.empty() && rt.segs.back().kind == seg::multi && rt.segs.back().text.empty() &&
          rt.segs.size() == sp.size() && match_path(rt, sp, with_slash, nullptr) && method_matches(rt.method, r.method())) {
        std::string loc = with_slash;
        if (!r.raw_query().empty()) loc += "?" + std::string(r.raw_query());
        w.set_header("Location", loc);
        w.write_header(301);
        return nullptr;
      }
    }
    w.write_header(404);
    w.write("404 page not found\n");
    return nullptr;
  }
  std::vector<std::pair<std::string, std::string>> values;
  match_path(*best, parts, path, &values);
  for (auto& [k, v] : values) r.set_path_value(std::move(k), std::move(v));
  return best;
}

void serve_mux::serve(response_writer& w, request& r) const {
  const route* best = route_for(w, r);
  if (!best) return;
  r.pattern_ = best->pattern;
  r.set_route_metrics(best->metrics.get());
  int64_t t = best->timeout_ns.load(std::memory_order_relaxed);
  if (t >= 0) r.shorten_deadline(clock::now() + std::chrono::nanoseconds(t));
  // Profiles attribute the handler's samples to its route (made once, per route: no
  // allocation per request).
  weft::detail::label_scope labels(best->labels);
  best->h(w, r);
}

handler not_found_handler() {
  return [](response_writer& w, request&) {
    w.write_header(404);
    w.write("404 page not found\n");
  };
}

handler redirect_handler(std::string url, int code) {
  return [url = std::move(url), code](response_writer& w, request&) {
    w.set_header("Location", url);
    w.write_header(code);
  };
}

handler strip_prefix(std::string prefix, handler h) {
  return [prefix = std::move(prefix), h = std::move(h)](response_writer& w, request& r) {
    std::string_view p = r.path();
    if (p.rfind(prefix, 0) != 0) {
      w.write_header(404);
      w.write("404 page not found\n");
      return;
    }
    r.set_path(std::string(p.substr(prefix.size())));
    h(w, r);
  };
}

handler max_bytes_handler(handler h, uint64_t n) {
  return [h = std::move(h), n](response_writer& w, request& r) {
    r.set_body_limit(n);
    h(w, r);
  };
}

handler timeout_handler(handler h, std::chrono::nanoseconds d) {
  return [h = std::move(h), d](response_writer& w, request& r) {
    r.shorten_deadline(clock::now() + d);
    h(w, r);
  };
}

}  // namespace weft::http
