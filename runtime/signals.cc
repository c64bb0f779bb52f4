// Signals the runtime owns: SIGSEGV/SIGBUS (stack overflow reports) and SIGQUIT (dump
// every goroutine and exit 2, as a Go program does).
//
// The SIGSEGV handler runs on a per-M alternate signal stack, because the faulting
// stack is the one that overflowed. It only does async-signal-safe work: it classifies
// the fault address against the stack arenas (a lock-free table), writes
// "goroutine N stack overflow" and exits 2. Any other fault is passed to the handler
// that was installed before ours (ASan's, or the default action).
//
// SIGQUIT's dump needs locks and allocation, so the handler only writes a byte to a
// pipe; a watcher thread does the dump and exits.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "runtime/internal/sched.h"
#include "runtime/internal/stack.h"

namespace weft::detail {

void install_panic_handler();

namespace {

constexpr std::size_t kAltStackSize = 64 * 1024;

struct sigaction g_old_segv;
struct sigaction g_old_bus;
int g_quit_pipe[2] = {-1, -1};

// Async-signal-safe decimal formatting.
std::size_t fmt_u64(char* buf, uint64_t v) {
  char tmp[24];
  std::size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  for (std::size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  return n;
}

void chain(int sig, siginfo_t* info, void* uctx, const struct sigaction& old) {
  if (old.sa_flags & SA_SIGINFO) {
    if (old.sa_sigaction) {
      old.sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
    old.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the fault re-executes and kills us.
  signal(sig, SIG_DFL);
}

void on_fault(int sig, siginfo_t* info, void* uctx) {
  if (stack_is_guard_address(info->si_addr)) {
    char buf[160];
    std::size_t n = 0;
    const char* a = "goroutine ";
    std::memcpy(buf + n, a, std::strlen(a));
    n += std::strlen(a);
    g* gp = getg();
    n += fmt_u64(buf + n, gp ? gp->id : 0);
    const char* b = " stack overflow\nfatal error: stack overflow\n";
    std::memcpy(buf + n, b, std::strlen(b));
    n += std::strlen(b);
    write_stderr(buf, n);
    _exit(2);
  }
  chain(sig, info, uctx, sig == SIGBUS ? g_old_bus : g_old_segv);
}

void on_quit(int) {
  char c = 'q';
  [[maybe_unused]] ssize_t r = write(g_quit_pipe[1], &c, 1);
}

void* quit_watcher(void*) {
  prctl(PR_SET_NAME, "weft-sigquit", 0, 0, 0);
  char c;
  while (read(g_quit_pipe[0], &c, 1) != 1) {
  }
  std::string out = "SIGQUIT: quit\n\n";
  write_goroutine_dump(out, nullptr, false);
  write_stderr(out.data(), out.size());
  _exit(2);
}

}  // namespace

void signals_init() {
  static bool done = false;
  if (done) return;
  done = true;
  install_panic_handler();

  struct sigaction sa{};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);

  if (pipe2(g_quit_pipe, O_CLOEXEC) == 0) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&th, &attr, quit_watcher, nullptr);
    pthread_attr_destroy(&attr);
    struct sigaction q{};
    q.sa_handler = on_quit;
    q.sa_flags = SA_RESTART;
    sigemptyset(&q.sa_mask);
    sigaction(SIGQUIT, &q, nullptr);
  }
}

void signals_thread_init(m* mp) {
  void* mem = mmap(nullptr, kAltStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return;
  stack_t ss{};
  ss.ss_sp = mem;
  ss.ss_size = kAltStackSize;
  stack_t old{};
  if (sigaltstack(&ss, &old) != 0) {
    munmap(mem, kAltStackSize);
    return;
  }
  mp->altstack = mem;
}

void signals_thread_fini(m* mp) {
  if (!mp->altstack) return;
  stack_t ss{};
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
  munmap(mp->altstack, kAltStackSize);
  mp->altstack = nullptr;
}

}  // namespace weft::detail
