# Run at build time (not configure time), so the recorded commit is the one built.
execute_process(COMMAND git -C ${SOURCE_DIR} rev-parse HEAD OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE failed ERROR_QUIET)
if(failed)
  set(commit "unknown")
endif()
# Dirty means tracked files differ from the commit (untracked files are not counted).
execute_process(COMMAND git -C ${SOURCE_DIR} status --porcelain --untracked-files=no OUTPUT_VARIABLE changes ERROR_QUIET)
if(changes)
  set(dirty true)
else()
  set(dirty false)
endif()
file(WRITE ${OUTPUT}.tmp "#pragma once\n#define CHATBENCH_GIT_COMMIT \"${commit}\"\n#define CHATBENCH_GIT_DIRTY ${dirty}\n")
file(COPY_FILE ${OUTPUT}.tmp ${OUTPUT} ONLY_IF_DIFFERENT)
