// 6.824's nocrash app: the crash app without faults; the crash test's expected output.
#include "mapreduce/apps/crash_app.h"

using NoCrashApp = ds::mr::apps::CrashApp</*kCrash=*/false>;
DS_MR_APP(NoCrashApp, "nocrash")
