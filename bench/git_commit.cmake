# Writes OUTPUT, a header with the commit the build is made from, and whether the sources
# that go into microbench (bench/, servers/common/) differ from that commit.
execute_process(COMMAND git rev-parse HEAD
                WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE status ERROR_QUIET)
if(NOT status EQUAL 0)
  set(commit "unknown")
endif()
execute_process(COMMAND git status --porcelain -- bench servers/common
                WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE changes OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(changes)
  set(dirty "true")
else()
  set(dirty "false")
endif()
set(content "#pragma once
// Generated at build time by bench/git_commit.cmake.
#define MICROBENCH_GIT_COMMIT \"${commit}\"
#define MICROBENCH_GIT_DIRTY \"${dirty}\"
")
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} old)
endif()
if(NOT old STREQUAL content)
  file(WRITE ${OUTPUT} "${content}")
endif()
