// A delay line between two network namespaces, for tests: the kernel here has no netem,
// so round-trip time is emulated in user space. One TUN device (IFF_TUN | IFF_NO_PI) is
// created inside each namespace; every IP packet read from one is written into the other
// after it has been held for half the round trip. Addresses are not rewritten: configure
// the two devices as each other's point-to-point peer (`ip addr add A peer B dev ...`).
//
//   kvferry_delay_line --netns-a /run/netns/X --netns-b /run/netns/Y --dev-a tunA --dev-b tunB
//                      [--rtt-us N] [--slots N] [--mtu N]
//
// Prints "ready" on stdout once both devices exist (they vanish when it exits); on SIGINT
// or SIGTERM it stops and prints what it forwarded, dropped and held at most. Each
// direction holds at most --slots packets (a FIFO of fixed slots: arrival order is due
// order); a packet arriving at a full queue is dropped, as a router's tail drop. One thread,
// epoll on both devices, a signalfd and an absolute CLOCK_MONOTONIC timerfd (timer slack
// set to 1 ns, so that 50 us holds are not rounded up to the default 50 us slack).
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "delay_line: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

std::int64_t now_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000ll + t.tv_nsec;
}

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Opens a TUN device named `dev` inside the network namespace at `ns_path`, with `mtu`.
int open_tun_in(const std::string& ns_path, const std::string& dev, int mtu) {
  Fd home(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  Fd ns(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (home.fd < 0 || ns.fd < 0) die("cannot open network namespace " + ns_path);
  if (::setns(ns.fd, CLONE_NEWNET) != 0) die("setns " + ns_path);
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev.c_str());
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) die("TUNSETIFF " + dev);
  Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifr.ifr_mtu = mtu;
  if (sock.fd < 0 || ::ioctl(sock.fd, SIOCSIFMTU, &ifr) != 0) die("set the MTU of " + dev);
  if (::setns(home.fd, CLONE_NEWNET) != 0) die("setns back");
  return fd;
}

// One direction: packets read from `in`, written to `out` once due.
class Queue {
 public:
  Queue(int in, int out, std::size_t slots, std::size_t slot_bytes)
      : in_(in), out_(out), slots_(slots), slot_bytes_(slot_bytes),
        data_(new std::uint8_t[slots * slot_bytes]), len_(new std::uint32_t[slots]), due_(new std::int64_t[slots]) {}

  // Reads what the device has (bounded batch); false on a read error other than "none left".
  bool pull(std::int64_t hold_ns) {
    for (int i = 0; i < 256; ++i) {
      std::uint8_t* dst = count_ < slots_ ? slot(tail_) : scratch_;
      const ssize_t n = ::read(in_, dst, slot_bytes_);
      if (n < 0) return errno == EAGAIN || errno == EINTR;
      if (n == 0) continue;
      if (count_ == slots_) {
        ++dropped_;
        continue;
      }
      len_[tail_] = static_cast<std::uint32_t>(n);
      due_[tail_] = now_ns() + hold_ns;
      tail_ = (tail_ + 1) % slots_;
      ++count_;
      if (count_ > max_held_) max_held_ = count_;
    }
    return true;
  }
  // Writes every packet that is due; returns when the next one is due (INT64_MAX: none).
  std::int64_t push() {
    const std::int64_t now = now_ns();
    while (count_ > 0 && due_[head_] <= now) {
      const ssize_t n = ::write(out_, slot(head_), len_[head_]);
      if (n < 0 && errno == EAGAIN) return now + 20000;  // the device is busy: retry soon
      if (n < 0) ++write_errors_;
      else ++forwarded_, bytes_ += static_cast<std::uint64_t>(n);
      head_ = (head_ + 1) % slots_;
      --count_;
    }
    return count_ > 0 ? due_[head_] : INT64_MAX;
  }
  void report(const char* name) const {
    std::fprintf(stderr, "delay_line: %s: forwarded %llu packets (%llu bytes), dropped %llu (queue full), "
                 "write errors %llu, held at most %zu of %zu\n", name,
                 static_cast<unsigned long long>(forwarded_), static_cast<unsigned long long>(bytes_),
                 static_cast<unsigned long long>(dropped_), static_cast<unsigned long long>(write_errors_),
                 max_held_, slots_);
  }

 private:
  std::uint8_t* slot(std::size_t i) { return data_.get() + i * slot_bytes_; }

  const int in_, out_;
  const std::size_t slots_, slot_bytes_;
  // Not zeroed: pages are committed as slots are first used.
  std::unique_ptr<std::uint8_t[]> data_;
  std::unique_ptr<std::uint32_t[]> len_;
  std::unique_ptr<std::int64_t[]> due_;
  std::uint8_t scratch_[65536];
  std::size_t head_ = 0, tail_ = 0, count_ = 0, max_held_ = 0;
  std::uint64_t forwarded_ = 0, bytes_ = 0, dropped_ = 0, write_errors_ = 0;
};

void usage() {
  std::fprintf(stderr,
               "usage: kvferry_delay_line --netns-a PATH --netns-b PATH --dev-a NAME --dev-b NAME "
               "[--rtt-us N] [--slots N] [--mtu N]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string ns_a, ns_b, dev_a, dev_b;
  long rtt_us = 0, slots = 1024, mtu = 64000;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) usage();
    const char* v = argv[++i];
    if (a == "--netns-a") ns_a = v;
    else if (a == "--netns-b") ns_b = v;
    else if (a == "--dev-a") dev_a = v;
    else if (a == "--dev-b") dev_b = v;
    else if (a == "--rtt-us") rtt_us = std::strtol(v, nullptr, 10);
    else if (a == "--slots") slots = std::strtol(v, nullptr, 10);
    else if (a == "--mtu") mtu = std::strtol(v, nullptr, 10);
    else usage();
  }
  if (ns_a.empty() || ns_b.empty() || dev_a.empty() || dev_b.empty()) usage();
  if (rtt_us < 0 || rtt_us > 10000000 || slots < 16 || slots > 65536 || mtu < 576 || mtu > 65000) {
    std::fprintf(stderr, "delay_line: --rtt-us 0..10000000, --slots 16..65536, --mtu 576..65000\n");
    return 2;
  }
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) die("no usable /dev/net/tun");
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (::sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) die("sigprocmask");
  Fd sig(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  Fd tun_a(open_tun_in(ns_a, dev_a, static_cast<int>(mtu)));
  Fd tun_b(open_tun_in(ns_b, dev_b, static_cast<int>(mtu)));
  Fd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (sig.fd < 0 || timer.fd < 0 || ep.fd < 0) die("signalfd / timerfd / epoll");
  for (int fd : {tun_a.fd, tun_b.fd, timer.fd, sig.fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(ep.fd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
  }
  const std::size_t slot_bytes = static_cast<std::size_t>(mtu) + 64;
  auto a_to_b = std::make_unique<Queue>(tun_a.fd, tun_b.fd, static_cast<std::size_t>(slots), slot_bytes);
  auto b_to_a = std::make_unique<Queue>(tun_b.fd, tun_a.fd, static_cast<std::size_t>(slots), slot_bytes);
  const std::int64_t hold_ns = rtt_us * 1000 / 2;
  std::printf("ready %s %s rtt %ld us\n", dev_a.c_str(), dev_b.c_str(), rtt_us);
  std::fflush(stdout);

  std::int64_t armed = INT64_MAX;
  for (;;) {
    epoll_event evs[4];
    const int n = ::epoll_wait(ep.fd, evs, 4, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    bool stop = false;
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == sig.fd) stop = true;
      else if (fd == tun_a.fd && !a_to_b->pull(hold_ns)) die("read " + dev_a);
      else if (fd == tun_b.fd && !b_to_a->pull(hold_ns)) die("read " + dev_b);
      else if (fd == timer.fd) {
        std::uint64_t expirations;
        [[maybe_unused]] ssize_t r = ::read(timer.fd, &expirations, sizeof expirations);
        armed = INT64_MAX;
      }
    }
    if (stop) break;
    const std::int64_t next = std::min(a_to_b->push(), b_to_a->push());
    if (next != INT64_MAX && next != armed) {
      itimerspec its{};
      its.it_value.tv_sec = next / 1000000000;
      its.it_value.tv_nsec = next % 1000000000;
      if (::timerfd_settime(timer.fd, TFD_TIMER_ABSTIME, &its, nullptr) != 0) die("timerfd_settime");
      armed = next;
    }
  }
  a_to_b->report((dev_a + " -> " + dev_b).c_str());
  b_to_a->report((dev_b + " -> " + dev_a).c_str());
  return 0;
}
