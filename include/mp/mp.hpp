// mp/mp.hpp — everything in mp: Python's multiprocessing and
// concurrent.futures for C++20 on Linux.
#pragma once

#include "mp/connection.hpp"
#include "mp/context.hpp"
#include "mp/error.hpp"
#include "mp/function.hpp"
#include "mp/process.hpp"
#include "mp/queue.hpp"
#include "mp/serialize.hpp"
#if __has_include("mp/synchronize.hpp")
#include "mp/synchronize.hpp"
#endif
#if __has_include("mp/value.hpp")
#include "mp/value.hpp"
#endif
#if __has_include("mp/shared_memory.hpp")
#include "mp/shared_memory.hpp"
#endif
