(*
    A short watch of stdin before a read blocks. A thread blocked in read(2) is woken by the daemon's write, and on a
    virtual machine a halted vCPU takes tens of microseconds to wake: two such wake-ups in every batch (the checkpoint's
    reply, then the next batch) are a large part of a batch's time at 100 B records when the daemon answers at once, as
    kcl-local does (bench/README.md, "Local daemon", "Seventeenth round"). The watch polls the pipe without waiting,
    for a bounded time, only while the daemon's last answers all came within it; the real daemon's checkpoint replies
    wait for a DynamoDB write, milliseconds, so under it the watch stays off and costs two clock reads per read.
*)
namespace Kcl.Core

#nowarn "9" "51" // poll(2) takes the address of a pollfd on the stack

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Threading
open Microsoft.FSharp.NativeInterop

/// poll(2), Linux: here for the stdin watch, and for kcl-local's watch of a child's stdout and its splices.
module internal Poll =
    /// One descriptor for poll: `struct pollfd`.
    [<Struct; StructLayout(LayoutKind.Sequential)>]
    type PollFd =
        val mutable Fd: int
        val mutable Events: int16
        val mutable ReturnedEvents: int16

    // No marshalling (a pointer, no SetLastError), so crossgen precompiles the call, as Native's in Stdio.fs.
    [<DllImport("libc")>]
    extern int poll(nativeint fds, unativeint count, int timeout)

    let private pollIn = 1s
    let private pollOut = 4s

    /// Whether the descriptor has bytes to read, or has ended, within `timeout` milliseconds (0: now).
    let readable (fd: int) (timeout: int) =
        let mutable target = PollFd(Fd = fd, Events = pollIn)
        poll (NativePtr.toNativeInt &&target, 1un, timeout) > 0

    /// Whether a pipe's write end has room within `timeout` milliseconds, its reader still there.
    let writable (fd: int) (timeout: int) =
        let mutable target = PollFd(Fd = fd, Events = pollOut)
        poll (NativePtr.toNativeInt &&target, 1un, timeout) > 0 && target.ReturnedEvents = pollOut

/// Watches a pipe for up to `limit` before a blocking read, while each of the last few waits for bytes was within
/// the limit. Used by the one thread that reads stdin.
[<Sealed; AllowNullLiteral>]
type internal PipeWatch(fd: int, limit: TimeSpan) =
    let limitTicks = int64 (limit.TotalSeconds * float Stopwatch.Frequency)
    // The last waits for bytes, in Stopwatch ticks; long until measured, so the watch starts only once the daemon has
    // answered quickly a few times in a row.
    let recentWaits = Array.create 4 Int64.MaxValue
    let mutable waits = 0

    /// The environment variable that sets the watch's limit in microseconds; 0 turns it off.
    static member Variable = "KCL_STDIN_WATCH_MICROSECONDS"

    /// The limit when the variable does not set one.
    static member DefaultLimit = TimeSpan.FromMicroseconds 200.0

    /// The limit the variable's text sets: whole microseconds, 0 for none; the default when unset or not a count.
    static member LimitFrom(text: string) =
        match Int32.TryParse text with
        | true, microseconds when microseconds >= 0 -> TimeSpan.FromMicroseconds(float microseconds)
        | _ -> PipeWatch.DefaultLimit

    /// The watch for a process's stdin, when it is a file descriptor on Linux and the variable does not turn it off.
    static member ForStdin(input: Stream) : PipeWatch =
        let limit =
            PipeWatch.LimitFrom(Environment.GetEnvironmentVariable PipeWatch.Variable)

        match input with
        | :? FileStream as file when OperatingSystem.IsLinux() && limit > TimeSpan.Zero ->
            PipeWatch(int (file.SafeFileHandle.DangerousGetHandle()), limit)
        | _ -> null

    /// Whether the next wait is watched: each of the last waits came within the limit.
    member _.Watching = Array.forall (fun wait -> wait <= limitTicks) recentWaits

    /// Called before a read that may block: watches the pipe until it has bytes or the limit passes, if the recent
    /// waits were short. Returns when the wait began, for `AfterRead`.
    member this.BeforeRead() =
        let began = Stopwatch.GetTimestamp()

        if this.Watching then
            let until = began + limitTicks
            let mutable found = Poll.readable fd 0

            while not found && Stopwatch.GetTimestamp() < until do
                Thread.SpinWait 20
                found <- Poll.readable fd 0

        began

    /// Called once the read has returned: how long the bytes took decides whether the next wait is watched.
    member _.AfterRead(began: int64) =
        recentWaits[waits % recentWaits.Length] <- Stopwatch.GetTimestamp() - began
        waits <- waits + 1
