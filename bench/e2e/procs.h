// Child processes and /proc readings for the end-to-end benchmark. Every process is started
// here and ended by its PID.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace herald::bench {

// Starts `argv` with the environment minus HERALD_* plus `env`. stdout and stderr go to
// `log_path`, or stdout to a pipe whose read end is returned in `*stdout_pipe` (stderr to the
// log). The child is killed if the benchmark dies (PR_SET_PDEATHSIG). Returns -1 on failure.
pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log_path,
            int* stdout_pipe = nullptr);

// Waits up to `timeout` for `pid` to exit; returns its exit code (128+N for signal N) or -1.
int WaitExit(pid_t pid, std::chrono::milliseconds timeout);

// SIGTERM, then SIGKILL after `grace`. Returns the exit code as WaitExit.
int Terminate(pid_t pid, std::chrono::milliseconds grace);

// Runs a command to completion; stdout+stderr into `output`. Returns the exit code.
int RunCommand(const std::vector<std::string>& argv, std::string* output = nullptr);

// utime + stime of `pid` in seconds; -1 if it cannot be read.
double CpuSeconds(pid_t pid);
// Bytes `pid` caused to be written to storage (write_bytes of /proc/PID/io); -1 if unreadable.
long long WrittenBytes(pid_t pid);
// VmHWM / VmRSS of `pid` in KiB; -1 if it cannot be read.
long PeakRssKb(pid_t pid);
long RssKb(pid_t pid);
// utime + stime in seconds of the threads of `pid`, summed by thread name (heraldd names its
// threads: engine, store-writer, w:webhook, ...); empty if it cannot be read.
std::map<std::string, double> ThreadCpuSeconds(pid_t pid);
// Context switches (voluntary + involuntary) of all threads of `pid`; -1 if it cannot be read.
long long ContextSwitches(pid_t pid);
// Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat.
double MachineBusySeconds();
std::string LoadAverage();

}  // namespace herald::bench
