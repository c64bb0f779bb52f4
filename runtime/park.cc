// Wait reason texts, spelled as Go's runtime spells them in tracebacks.
#include "runtime/park.h"

namespace weft {

std::string_view to_string(wait_reason r) {
  switch (r) {
    case wait_reason::none: return "waiting";
    case wait_reason::sleep: return "sleep";
    case wait_reason::yield: return "yield";
    case wait_reason::preempted: return "preempted";
    case wait_reason::chan_receive: return "chan receive";
    case wait_reason::chan_send: return "chan send";
    case wait_reason::chan_receive_nil: return "chan receive (nil chan)";
    case wait_reason::chan_send_nil: return "chan send (nil chan)";
    case wait_reason::select: return "select";
    case wait_reason::select_no_cases: return "select (no cases)";
    case wait_reason::sync_mutex_lock: return "sync.Mutex.Lock";
    case wait_reason::sync_rwmutex_rlock: return "sync.RWMutex.RLock";
    case wait_reason::sync_rwmutex_lock: return "sync.RWMutex.Lock";
    case wait_reason::sync_cond_wait: return "sync.Cond.Wait";
    case wait_reason::sync_wait_group_wait: return "sync.WaitGroup.Wait";
    case wait_reason::semacquire: return "semacquire";
    case wait_reason::io_wait: return "IO wait";
    case wait_reason::park_test: return "test park";
    case wait_reason::count_: break;
  }
  return "waiting";
}

}  // namespace weft
