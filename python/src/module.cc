// kvferry._kvferry: the native module behind the `kvferry` package (python/kvferry/).
#include <nanobind/nanobind.h>

#include "memory_args.h"
#include "py_agent.h"

NB_MODULE(_kvferry, m) {
  m.doc() = "kvferry's native module; import `kvferry` instead.";
  kvferry::python::register_error_translator();
  kvferry::python::import_numpy_api();
  kvferry::python::bind_types(m);
  kvferry::python::bind_completion_queue(m);
  kvferry::python::bind_agent(m);
  kvferry::python::bind_kv(m);
  kvferry::python::bind_tp(m);
  kvferry::python::bind_offload(m);
  kvferry::python::bind_bench(m);
}
