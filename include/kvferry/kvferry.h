// kvferry/kvferry.h — everything public, in one include.
#pragma once

#include "kvferry/agent.h"
#include "kvferry/memory.h"
#include "kvferry/prepared_list.h"
#include "kvferry/status.h"
#include "kvferry/transfer.h"
#include "kvferry/info.h"
