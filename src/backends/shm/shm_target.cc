#include "backends/shm/shm_target.h"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "backends/shm/shm_protocol.h"
#include "core/byte_io.h"

namespace kvferry::detail::shm {
namespace {

// How long serve() polls the rings in one call while it spins before it re-arms itself
// (other handlers run in between). Re-arming costs the reactor a few system calls; once
// per poll that added microseconds to a notification's round trip.
constexpr auto kSpinSlice = std::chrono::microseconds(50);

}  // namespace

struct ShmTarget::Rings : HostTarget::Peer::Attachment {
  ControlBlock* cb = nullptr;
  UniqueFd peer_wake;  // the initiator's eventfd
  ~Rings() override {
    if (cb) ::munmap(cb, sizeof(ControlBlock));
  }
};

Result<std::unique_ptr<ShmTarget>> ShmTarget::start(std::shared_ptr<Reactor> reactor, TargetConfig config) {
  std::unique_ptr<ShmTarget> t(new ShmTarget());
  t->cfg_ = std::move(config);
  KVF_ASSIGN_OR_RETURN(t->wake_, make_eventfd("shm"));
  ShmTarget* raw = t.get();  // the destructor ends every hook and handler first
  HostTarget::Hooks hooks;
  hooks.hello_fds = 2;  // control block, eventfd
  hooks.accept = [raw](HostTarget::Peer& p, std::vector<UniqueFd>& fds, std::vector<int>* answer) {
    return raw->accept(p, fds, answer);
  };
  hooks.on_ready = [raw](const std::shared_ptr<HostTarget::Peer>& p) {
    raw->ready_.push_back(p);
    raw->serve();  // marks its ring sleeping (or serves it) from now on
  };
  KVF_ASSIGN_OR_RETURN(t->host_, HostTarget::start(std::move(reactor),
                                                   t->cfg_.link("shm", kShmProtocolVersion),
                                                   "kvferry-shm", std::move(hooks)));
  KVF_ASSIGN_OR_RETURN(t->wake_watch_, t->host_->reactor().watch(t->wake_.get(), EPOLLIN, [raw](std::uint32_t) {
    std::uint64_t v;
    [[maybe_unused]] ssize_t rc = ::read(raw->wake_.get(), &v, sizeof v);
    raw->serve();
  }));
  return t;
}

ShmTarget::~ShmTarget() {
  // On the reactor thread nothing of ours runs meanwhile; cancel there returns at once.
  host_->reactor().run_sync([this] {
    host_->reactor().cancel(wake_watch_);
    stopping_ = true;  // no serve() re-arms from now on
    host_->reactor().cancel(spin_);
    spin_ = 0;
  });
  host_.reset();  // its hooks (ours) end here; the peers' rings are unmapped with them
  ready_.clear();
}

Status ShmTarget::add_region(const RegionInfo& region) {
  // Every region is tracked, also those without a memfd (peers reach them through
  // process_vm_*): a session announces only live regions, so an initiator that holds
  // metadata from before a deregistration cannot reach that memory any more.
  HostTarget::Region r;
  r.info = region;
  if (region.share_fd >= 0) {
    int dup = ::fcntl(region.share_fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return IoErrorFromErrno("shm: dup memfd", errno);
    r.fd = std::make_shared<UniqueFd>(dup);
  }
  ByteWriter payload;
  payload.u64(region.share_offset);
  r.payload = payload.buffer();
  host_->add_region(std::move(r));
  return Status::Ok();
}

Status ShmTarget::accept(HostTarget::Peer& peer, std::vector<UniqueFd>& fds, std::vector<int>* answer) {
  struct stat st {};
  if (::fstat(fds[0].get(), &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(ControlBlock))
    return InvalidArgument("control block too small");
  void* p = ::mmap(nullptr, sizeof(ControlBlock), PROT_READ | PROT_WRITE, MAP_SHARED, fds[0].get(), 0);
  if (p == MAP_FAILED) return InvalidArgument("cannot map the control block");
  auto rings = std::make_unique<Rings>();
  rings->cb = static_cast<ControlBlock*>(p);
  if (rings->cb->magic != kControlMagic) return InvalidArgument("bad control block");
  rings->peer_wake = std::move(fds[1]);
  peer.attachment = std::move(rings);
  answer->push_back(wake_.get());  // the initiator rings it when we sleep
  return Status::Ok();
}

ShmTarget::Rings* ShmTarget::rings_of(HostTarget::Peer& p) { return static_cast<Rings*>(p.attachment.get()); }

void ShmTarget::set_sleeping(bool sleeping) {
  for (auto& p : ready_)
    rings_of(*p)->cb->to_target.consumer_sleeping.store(sleeping ? 1 : 0, std::memory_order_seq_cst);
}

bool ShmTarget::all_rings_empty() {
  for (auto& p : ready_)
    if (!p->dead && !ring_empty(rings_of(*p)->cb->to_target)) return false;
  return true;
}

bool ShmTarget::serve_rings() {
  bool any = false;
  for (auto& sp : ready_) {
    if (sp->dead) continue;
    ControlBlock* cb = rings_of(*sp)->cb;
    Record rec;
    Status err;
    bool acked = false;
    while (ring_pop(cb->to_target, &rec, &err)) {
      any = true;
      if (rec.type != RecordType::kNotify || rec.payload.size() > cfg_.max_notification_bytes) {
        err = Corrupt("unexpected record");
        break;
      }
      // The initiator published this record after the transfer's last byte (release
      // on the ring's head): the data is visible before the notification is.
      Status kept = cfg_.deliver(sp->name, std::move(rec.payload));
      if (rec.req != 0) {
        // An empty ack: delivered. Otherwise the ack carries why the inbox refused it.
        const std::string why = kept.ok() ? std::string() : kept.message().substr(0, kMaxRecordPayload);
        if (!ring_push(cb->to_initiator, RecordType::kNotifyAck, rec.req, why.data(),
                       static_cast<std::uint32_t>(why.size()))) {
          err = Corrupt("the initiator's ring stays full");
          break;
        }
        acked = true;
      }
    }
    if (!err.ok()) host_->drop(*sp);
    if (acked && cb->to_initiator.consumer_sleeping.load(std::memory_order_seq_cst))
      ring_eventfd(rings_of(*sp)->peer_wake.get());
  }
  std::erase_if(ready_, [](const std::shared_ptr<HostTarget::Peer>& p) { return p->dead.load(); });
  return any;
}

void ShmTarget::serve() {
  if (stopping_) return;
  if (spin_) host_->reactor().cancel(spin_);  // reactor thread: at once
  spin_ = 0;
  const auto slice_end = Clock::now() + kSpinSlice;
  for (;;) {
    const auto now = Clock::now();
    if (serve_rings()) last_activity_ = now;
    bool spin = now - last_activity_ < std::chrono::microseconds(cfg_.spin_us);
    if (!spin) {
      // Asleep: initiators ring our eventfd. A record pushed before they could see the
      // flag is caught by the check after it.
      set_sleeping(true);
      spin = !all_rings_empty();
    }
    if (!spin) return;
    set_sleeping(false);
    std::this_thread::yield();  // a spinning initiator may share our CPU: let it run
    if (Clock::now() >= slice_end) break;
  }
  // Re-armed at once; fds, other timers and tasks of the reactor run in between.
  spin_ = host_->reactor().after(std::chrono::nanoseconds(0), [this] { serve(); });
}

}  // namespace kvferry::detail::shm
