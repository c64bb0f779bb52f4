# Every dependency is a Debian package (the Makefile installs them). Nothing is vendored.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# Boost.Context: the fcontext switch under every goroutine (static, no PLT on the switch).
set(Boost_USE_STATIC_LIBS ON)
find_package(Boost 1.74 REQUIRED COMPONENTS context)

# spdlog (with Debian's external fmt).
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)

# Standalone Asio: header-only (libasio-dev).
find_path(ASIO_INCLUDE_DIR asio.hpp REQUIRED)
add_library(weft_asio INTERFACE)
target_include_directories(weft_asio SYSTEM INTERFACE ${ASIO_INCLUDE_DIR})
target_compile_definitions(weft_asio INTERFACE ASIO_STANDALONE ASIO_NO_DEPRECATED)

# llhttp: Debian's node-llhttp ships the generated C sources; build them as a static library.
set(LLHTTP_SRC_DIR /usr/share/llhttp CACHE PATH "llhttp C sources (node-llhttp)")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "llhttp header (node-llhttp)")
if(NOT EXISTS ${LLHTTP_SRC_DIR}/llhttp.c OR NOT EXISTS ${LLHTTP_INCLUDE_DIR}/llhttp.h)
  message(FATAL_ERROR "llhttp sources not found; install Debian's node-llhttp")
endif()
add_library(llhttp STATIC ${LLHTTP_SRC_DIR}/llhttp.c ${LLHTTP_SRC_DIR}/api.c ${LLHTTP_SRC_DIR}/http.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
target_compile_options(llhttp PRIVATE -w)
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)

# Config and flags.
find_package(tomlplusplus REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(ZLIB REQUIRED)

# libdw (elfutils): file:line symbolization for goroutine dumps and pprof profiles.
pkg_check_modules(LIBDW REQUIRED IMPORTED_TARGET libdw)

# Tests and benchmarks.
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
