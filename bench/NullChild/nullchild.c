/* The least a child can do under the lock-step protocol: it decodes nothing, and answers each batch with a checkpoint
   and, after the reply, a status. Its records/s under bench/ProcessBench is the ceiling the driver and the machine's
   pipes and wake-ups leave any child (bench/README.md, "Seventh round"). It does not widen its stdin pipe, so it is
   slow on lines much longer than 64 KiB.
     gcc -O2 -o artifacts/bench/null-child bench/NullChild/nullchild.c
     dotnet fsi build.fsx bench -- --child null-child=$PWD/artifacts/bench/null-child */
#include <string.h>
#include <unistd.h>
static char buf[1 << 25];
static size_t start, end;
static char *next_line(size_t *len) {
    for (;;) {
        char *nl = memchr(buf + start, '\n', end - start);
        if (nl) { char *line = buf + start; *len = nl - line; start = nl - buf + 1; return line; }
        if (start > 0) { memmove(buf, buf + start, end - start); end -= start; start = 0; }
        ssize_t n = read(0, buf + end, sizeof buf - end);
        if (n <= 0) return 0;
        end += n;
    }
}
static void say(const char *s) { write(1, s, strlen(s)); }
int main(void) {
    size_t len; char *line;
    while ((line = next_line(&len))) {
        if (len > 20 && !memcmp(line + 11, "initialize", 10))
            say("{\"action\":\"status\",\"responseFor\":\"initialize\"}\n");
        else if (len > 20 && (!memcmp(line + 11, "processRecords", 14) || !memcmp(line + 11, "shardEnded", 10))) {
            int records = line[11] == 'p';
            say("{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null}\n");
            if (!next_line(&len)) return 1;
            say(records ? "{\"action\":\"status\",\"responseFor\":\"processRecords\"}\n"
                        : "{\"action\":\"status\",\"responseFor\":\"shardEnded\"}\n");
        }
    }
    return 0;
}
