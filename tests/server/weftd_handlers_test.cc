// The pieces of weftd's routes that have logic of their own (the routes themselves are
// driven with curl in tests/integration/weftd_test.cc).
#include "handlers/weftd_handlers.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

std::string json_quoted(std::string_view s) {
  std::string out(weft::handlers::json_string_max(s.size()), '\0');
  out.resize(weft::handlers::write_json_string(out.data(), s) - out.data());
  return out;
}

// Every byte below 0x80, alone and between others, as nlohmann's dump() writes it.
TEST(JsonString, EscapesAsciiAsNlohmannDoes) {
  for (int c = 0; c < 0x80; c++) {
    std::string s = "a" + std::string(1, static_cast<char>(c)) + "b";
    EXPECT_EQ(json_quoted(s), nlohmann::json(s).dump()) << "byte " << c;
  }
}

TEST(JsonString, PassesUtf8Through) {
  for (std::string s : {"", "Hello, World!", "h\xc3\xa9llo", "\xe2\x82\xac 1", "\xf0\x9f\x98\x80"}) {
    EXPECT_EQ(json_quoted(s), nlohmann::json(s).dump());
  }
}

// The bound holds at its worst: every byte a \u00XX escape.
TEST(JsonString, WorstCaseFitsTheBound) {
  std::string s(100, '\x01');
  std::vector<char> buf(weft::handlers::json_string_max(s.size()) + 1, '#');
  char* end = weft::handlers::write_json_string(buf.data(), s);
  EXPECT_EQ(static_cast<size_t>(end - buf.data()), weft::handlers::json_string_max(s.size()));
  EXPECT_EQ(buf.back(), '#');
  EXPECT_EQ(nlohmann::json::parse(std::string(buf.data(), end)).get<std::string>(), s);
}

}  // namespace
