// Test app: a shared library that loads but is not a MapReduce plugin (it does
// not export ds_mr_get_app).
extern "C" int not_a_mapreduce_app() { return 42; }
