# Run by ctest (see package_test.cmake) as `cmake -D... -P run_package_test.cmake`.
# Steps: install the build tree into WORK_DIR/prefix, configure the consumer with
# CMAKE_PREFIX_PATH pointing there, build it, run it and check it prints our version.
# With -DREADME=<README.md>, the README's first ```cpp block is built and run the same
# way, so the example users copy stays true to the installed API.
cmake_minimum_required(VERSION 3.20)

foreach(var KVFERRY_BUILD_DIR WORK_DIR CONSUMER_DIR GENERATOR CXX_COMPILER EXPECTED_VERSION)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_package_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(consumer_build ${WORK_DIR}/consumer-build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(step name)
  message(STATUS "package test: ${name}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package test: ${name} failed (${rc}):\n${out}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

step("install" ${CMAKE_COMMAND} --install ${KVFERRY_BUILD_DIR} --prefix ${prefix})

set(readme_example "")
if(README)
  file(READ ${README} text)
  string(FIND "${text}" "```cpp\n" begin)
  if(begin EQUAL -1)
    message(FATAL_ERROR "package test: no ```cpp block in ${README}")
  endif()
  math(EXPR begin "${begin} + 7")
  string(SUBSTRING "${text}" ${begin} -1 text)
  string(FIND "${text}" "```" end)
  string(SUBSTRING "${text}" 0 ${end} text)
  set(readme_example ${WORK_DIR}/readme_example.cc)
  file(WRITE ${readme_example} "${text}")
endif()

set(configure_args -S ${CONSUMER_DIR} -B ${consumer_build} -G ${GENERATOR}
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
    -DREADME_EXAMPLE=${readme_example})
if(MAKE_PROGRAM)
  list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
step("configure consumer" ${CMAKE_COMMAND} ${configure_args})
string(FIND "${step_output}" "kvferry ${EXPECTED_VERSION} from ${prefix}/" found)
if(found EQUAL -1)
  message(FATAL_ERROR "package test: consumer did not find kvferry in ${prefix}:\n${step_output}")
endif()

step("build consumer" ${CMAKE_COMMAND} --build ${consumer_build})

# The consumer's build tree carries an RPATH to ${prefix}; LD_LIBRARY_PATH covers
# toolchains that do not add one.
file(GLOB libdirs LIST_DIRECTORIES true ${prefix}/lib ${prefix}/lib64 ${prefix}/lib/*-linux-gnu)
string(REPLACE ";" ":" libpath "${libdirs}")
set(run ${CMAKE_COMMAND} -E env "LD_LIBRARY_PATH=${libpath}:$ENV{LD_LIBRARY_PATH}")
step("run consumer" ${run} ${consumer_build}/consumer)
message(STATUS "package test: consumer says: ${step_output}")
if(NOT step_output MATCHES "kvferry ${EXPECTED_VERSION}:")
  message(FATAL_ERROR "package test: expected version ${EXPECTED_VERSION} in the consumer's output")
endif()

if(readme_example)
  step("run the README example" ${run} ${consumer_build}/readme_example)
  message(STATUS "package test: README example says: ${step_output}")
endif()
