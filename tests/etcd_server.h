// etcd_server.h — a real etcd (Debian's etcd-server) for the cluster suites: started on
// free loopback ports with its data in a fresh temporary folder, killed and removed when
// the EtcdServer goes away. Where etcd is not installed or does not come up, start()
// says why and the suite skips with that message.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"

namespace kvferry::testing {

class EtcdServer {
 public:
  // How the etcd elects (and so its lease floor, 1.5 election timeouts rounded up to a
  // second): kFast grants 1 s leases, as a deployment wanting 2 s departures would run it;
  // kDefaults is etcd as installed (2 s floor).
  enum class Timing { kFast, kDefaults };
  // nullptr and `why` filled when etcd cannot run here.
  static std::unique_ptr<EtcdServer> start(std::string* why, Timing timing = Timing::kFast) {
    const std::string binary = find_etcd();
    if (binary.empty()) {
      *why = "etcd is not installed (apt-get install etcd-server; scripts/bootstrap.sh does)";
      return nullptr;
    }
    std::unique_ptr<EtcdServer> s(new EtcdServer);
    char tmpl[] = "/tmp/kvferry-etcd-XXXXXX";
    if (!mkdtemp(tmpl)) {
      *why = "cannot make a temporary folder for etcd";
      return nullptr;
    }
    s->dir_ = tmpl;
    for (int attempt = 0; attempt < 3 && s->pid_ <= 0; ++attempt) {
      s->client_port_ = free_port();
      const std::uint16_t peer_port = free_port();
      const std::string client = "http://127.0.0.1:" + std::to_string(s->client_port_);
      const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port);
      std::vector<std::string> args = {binary,
                                       "--name=kvferry-test",
                                       "--data-dir=" + s->dir_ + "/data",
                                       "--listen-client-urls=" + client,
                                       "--advertise-client-urls=" + client,
                                       "--listen-peer-urls=" + peer,
                                       "--initial-advertise-peer-urls=" + peer,
                                       "--initial-cluster=kvferry-test=" + peer,
                                       "--log-outputs=" + s->dir_ + "/etcd.log",
                                       "--logger=zap"};
      if (timing == Timing::kFast) {
        args.push_back("--heartbeat-interval=50");
        args.push_back("--election-timeout=500");
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      const pid_t pid = fork();
      if (pid == 0) {
        // Our own process group: the test kills etcd and nothing else.
        setpgid(0, 0);
        execv(argv[0], argv.data());
        _exit(127);
      }
      s->pid_ = pid;
      if (s->wait_ready(std::chrono::seconds(15))) return s;
      s->stop();
    }
    *why = "etcd did not come up on a loopback port (log: " + s->dir_ + "/etcd.log)";
    s->keep_dir_ = true;
    return nullptr;
  }
  ~EtcdServer() {
    stop();
    if (!keep_dir_ && !dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::uint16_t port() const { return client_port_; }
  // etcd://127.0.0.1:PORT/NAMESPACE
  std::string url(const std::string& name_space) const {
    return "etcd://127.0.0.1:" + std::to_string(client_port_) + "/" + name_space;
  }

 private:
  EtcdServer() = default;
  static std::string find_etcd() {
    for (const char* p : {"/usr/bin/etcd", "/usr/local/bin/etcd"})
      if (access(p, X_OK) == 0) return p;
    return {};
  }
  static std::uint16_t free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    return ntohs(a.sin_port);
  }
  bool wait_ready(std::chrono::seconds limit) {
    auto traffic = std::make_shared<detail::EtcdTraffic>();
    detail::EtcdClient client("127.0.0.1", client_port_, std::chrono::milliseconds(500), traffic);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::int64_t revision = 0;
      if (client.range_prefix("kvferry-probe/", &revision).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string dir_;
  bool keep_dir_ = false;
  pid_t pid_ = -1;
  std::uint16_t client_port_ = 0;
};

}  // namespace kvferry::testing
