# package.find_package: installs this build into a scratch prefix, then builds and runs
# tests/package/consumer against it with find_package(kvferry). Proves that
# `cmake --install` and the CMake package config give users a working kvferry::kvferry,
# and that the README's code example builds and runs against the installed library.
# Included from tests/CMakeLists.txt.
add_test(NAME package.find_package
         COMMAND ${CMAKE_COMMAND}
                 -DKVFERRY_BUILD_DIR=${PROJECT_BINARY_DIR}
                 -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/package_test
                 -DCONSUMER_DIR=${CMAKE_CURRENT_LIST_DIR}/consumer
                 -DGENERATOR=${CMAKE_GENERATOR}
                 -DMAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}
                 -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                 -DEXPECTED_VERSION=${PROJECT_VERSION}
                 -DREADME=${PROJECT_SOURCE_DIR}/README.md
                 -P ${CMAKE_CURRENT_LIST_DIR}/run_package_test.cmake)
set_tests_properties(package.find_package PROPERTIES TIMEOUT 240 LABELS package)
