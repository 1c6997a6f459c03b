// mp/mp.hpp — everything in mp: Python's multiprocessing and
// concurrent.futures for C++20 on Linux. Each header below also stands alone.
#pragma once

#include "mp/connection.hpp"
#include "mp/context.hpp"
#include "mp/error.hpp"
#include "mp/function.hpp"
#include "mp/future.hpp"
#include "mp/log.hpp"
#include "mp/manager.hpp"
#include "mp/pool.hpp"
#include "mp/process.hpp"
#include "mp/process_pool_executor.hpp"
#include "mp/progress.hpp"
#include "mp/proxy.hpp"
#include "mp/queue.hpp"
#include "mp/serialize.hpp"
#include "mp/shared_memory.hpp"
#include "mp/synchronize.hpp"
#include "mp/thread_pool_executor.hpp"
#include "mp/timeout.hpp"
#include "mp/value.hpp"
#include "mp/version.hpp"
