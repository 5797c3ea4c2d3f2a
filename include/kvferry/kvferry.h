// kvferry/kvferry.h — everything public, in one include.
#pragma once

#include "kvferry/agent.h"
#include "kvferry/block_lanes.h"
#include "kvferry/completion_queue.h"
#include "kvferry/file.h"
#include "kvferry/memory.h"
#include "kvferry/prepared_list.h"
#include "kvferry/shared_memory.h"
#include "kvferry/status.h"
#include "kvferry/transfer.h"
#include "kvferry/info.h"
#include "kvferry/kv/block_plan.h"
#include "kvferry/kv/kv_handshake.h"
#include "kvferry/kv/kv_layout.h"
#include "kvferry/kv/kv_link.h"
#include "kvferry/kv/kv_pool.h"
#include "kvferry/kv/token_blocks.h"
