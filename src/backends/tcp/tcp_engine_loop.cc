// TcpEngine: the command queue and accepting streams, capped before their hello.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_session.h"
#include "core/accept_guard.h"

namespace kvferry::detail::tcp {
namespace {

constexpr std::size_t kMaxPendingPerAddress = 64;  // accepted streams before their hello
constexpr std::size_t kMaxPending = 256;

}  // namespace

void TcpEngine::run_commands() {
  std::vector<Command> cmds;
  {
    std::lock_guard lock(cmd_mu_);
    cmds.swap(commands_);
  }
  for (auto& c : cmds) c();
}

void TcpEngine::on_accept() {
  // Streams before their hello are untrusted: capped per remote address and in total,
  // the oldest making room (a real initiator sends its hello at once).
  auto evict_pending = [&](std::vector<std::unique_ptr<Stream>>::iterator it) {
    close_stream(**it);
    pending_.erase(it);
  };
  for (int k = 0; k < 64; ++k) {  // bounded: then serve the streams we have
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (!out_of_descriptors(errno)) return;
      // Out of descriptors: a silent stream gives one back; with none, stop watching the
      // listener a while (it stays readable: watching it would be a busy loop).
      std::erase_if(pending_, [](const std::unique_ptr<Stream>& p) { return !p->fd.valid(); });
      if (!pending_.empty()) {
        evict_pending(pending_.begin());
        continue;
      }
      reactor_->modify(listener_watch_, 0).ok();
      accept_paused_until_ = Clock::now() + kAcceptBackoff;
      return;
    }
    set_nodelay(fd).ok();  // latency only
    std::erase_if(pending_, [](const std::unique_ptr<Stream>& p) { return !p->fd.valid(); });
    std::string address = peer_address(fd);
    static const std::size_t max_pending = descriptor_share(kMaxPending, 4);
    auto evict = slot_to_free(pending_, address, kMaxPendingPerAddress, max_pending,
                              [](const std::unique_ptr<Stream>& p) -> const std::string& { return p->address; });
    if (evict != pending_.end()) evict_pending(evict);
    auto st = std::make_unique<Stream>();
    st->address = std::move(address);
    st->fd = UniqueFd(fd);
    if (!watch_stream(*st)) continue;  // closed: retired by settle
    pending_.push_back(std::move(st));
  }
}

}  // namespace kvferry::detail::tcp
