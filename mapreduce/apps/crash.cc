// 6.824's crash app: crashes or stalls the worker before maps and reduces.
#include "mapreduce/apps/crash_app.h"

using CrashingApp = ds::mr::apps::CrashApp</*kCrash=*/true>;
DS_MR_APP(CrashingApp, "crash")
