// Bench servers stop on SIGTERM or SIGINT. Construct a stop_signals before weft::run, so
// that every thread the runtime starts inherits the blocked mask, then call wait() from
// the main goroutine: it waits for either signal in a blocking() call.
#pragma once

#include <signal.h>

#include "runtime/runtime.h"

namespace weft::bench {

class stop_signals {
 public:
  stop_signals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  void wait() {
    int sig = 0;
    weft::blocking([&] { sigwait(&set_, &sig); });
  }

 private:
  sigset_t set_;
};

}  // namespace weft::bench
