// stop_signal.h — SIGINT/SIGTERM turn into a flag that long-running loops poll.
// Handlers are installed without SA_RESTART so a blocking poll() wakes up at once.
#pragma once

namespace kvferry::cli {

void install_stop_signal_handlers();
bool stop_requested();

}  // namespace kvferry::cli
