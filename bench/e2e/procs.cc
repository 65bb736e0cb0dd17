#include "bench/e2e/procs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

extern char** environ;

namespace herald::bench {

pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log_path,
            int* stdout_pipe) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "HERALD_", 7) != 0) envs.emplace_back(*e);
  }
  for (const std::string& kv : env) envs.push_back(kv);
  std::vector<char*> cargv, cenv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const std::string& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return -1;
  int pipefd[2] = {-1, -1};
  if (stdout_pipe && ::pipe2(pipefd, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return -1;
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(stdout_pipe ? pipefd[1] : log_fd, 1);
    ::dup2(log_fd, 2);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (stdout_pipe) {
    ::close(pipefd[1]);
    *stdout_pipe = pipefd[0];
  }
  return pid;
}

int WaitExit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int Terminate(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return -1;
  ::kill(pid, SIGTERM);
  int rc = WaitExit(pid, grace);
  if (rc >= 0) return rc;
  ::kill(pid, SIGKILL);
  return WaitExit(pid, std::chrono::seconds(10));
}

int RunCommand(const std::vector<std::string>& argv, std::string* output) {
  char path[] = "/tmp/herald-e2e-cmd-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0) return -1;
  ::close(fd);
  pid_t pid = Spawn(argv, {}, path);
  int rc = pid > 0 ? WaitExit(pid, std::chrono::minutes(5)) : -1;
  if (output) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    *output = ss.str();
  }
  ::unlink(path);
  return rc;
}

namespace {
// utime + stime from a /proc/.../stat file, in seconds; -1 if it cannot be read.
double StatCpuSeconds(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  // After the command: state(3) ... utime is field 14, stime 15 (1-based over the whole line).
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}
}  // namespace

double CpuSeconds(pid_t pid) { return StatCpuSeconds("/proc/" + std::to_string(pid) + "/stat"); }

long long WrittenBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/io");
  std::string key;
  long long value = 0;
  while (in >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return -1;
}

std::map<std::string, double> ThreadCpuSeconds(pid_t pid) {
  std::map<std::string, double> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return out;
  while (dirent* e = ::readdir(d.get())) {
    if (e->d_name[0] == '.') continue;
    std::string name;
    std::getline(std::ifstream(dir + "/" + e->d_name + "/comm"), name);
    double s = StatCpuSeconds(dir + "/" + e->d_name + "/stat");
    if (!name.empty() && s >= 0) out[name] += s;  // a thread gone meanwhile is skipped
  }
  return out;
}

namespace {
long StatusKb(pid_t pid, const char* key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  size_t klen = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, klen, key) == 0) return std::atol(line.c_str() + klen);
  }
  return -1;
}
}  // namespace

long PeakRssKb(pid_t pid) { return StatusKb(pid, "VmHWM:"); }
long RssKb(pid_t pid) { return StatusKb(pid, "VmRSS:"); }

long long ContextSwitches(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return -1;
  long long total = 0;
  while (dirent* e = ::readdir(d.get())) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::atoll(line.c_str() + line.find(':') + 1);
      }
    }
  }
  return total;
}

double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[10] = {};
  in >> cpu;
  for (auto& x : v) in >> x;
  unsigned long long total = 0;
  for (int i = 0; i < 8; ++i) total += v[i];  // user..steal; guest time is already in user
  unsigned long long idle = v[3] + v[4];
  return static_cast<double>(total - idle) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace herald::bench
