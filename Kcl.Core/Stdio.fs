(*
    The real process's standard streams, taken over for the protocol (POLICY.md "stdout" and "Signals").
    stdout is claimed at the file-descriptor level: the protocol keeps a private, close-on-exec duplicate of fd 1, and
    fd 1 itself becomes a copy of stderr. Whatever writes to "stdout" afterwards (Console.Out, a logger built earlier, a
    native library, a process that user code starts) lands on stderr, where the daemon only logs it.
*)
namespace Kcl.Core

#nowarn "9" // pipe2(2), readlink(2) and opendir(3) take pinned arrays

open System
open System.Globalization
open System.IO
open System.Runtime.InteropServices
open Microsoft.Extensions.Logging
open Microsoft.FSharp.NativeInterop
open Microsoft.Win32.SafeHandles

module internal Native =
    // No marshalling in these, so crossgen precompiles the calls: SetLastError, a string or an array each needs a stub
    // that is JIT-compiled at full optimisation while the child starts (bench/README.md, "Start-up", "Third round").
    // A failed call's errno is read with Marshal.GetLastSystemError right after it, as LibraryImport's generated code
    // does.
    [<DllImport("libc")>]
    extern int fcntl(int fd, int cmd, int arg)

    [<DllImport("libc")>]
    extern int dup2(int oldFd, int newFd)

    [<DllImport("libc")>]
    extern int pipe2(nativeint fds, int flags)

    [<DllImport("libc")>]
    extern int close(int fd)

    [<DllImport("libc")>]
    extern int dup3(int oldFd, int newFd, int flags)

    /// `path` is NUL-terminated UTF-8.
    [<DllImport("libc")>]
    extern nativeint readlink(nativeint path, nativeint buffer, nativeint size)

    /// `path` is NUL-terminated UTF-8.
    [<DllImport("libc")>]
    extern nativeint opendir(nativeint path)

    [<DllImport("libc")>]
    extern nativeint readdir(nativeint directory)

    [<DllImport("libc")>]
    extern int closedir(nativeint directory)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern nativeint GetStdHandle(int which)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern bool SetStdHandle(int which, nativeint handle)

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern nativeint GetCurrentProcess()

    [<DllImport("kernel32.dll", SetLastError = true)>]
    extern bool DuplicateHandle(
        nativeint sourceProcess,
        nativeint source,
        nativeint targetProcess,
        nativeint& target,
        uint32 access,
        bool inheritable,
        uint32 options
    )

/// How wide stdin's pipe is made (Linux), and when it is left alone. A `processRecords` line runs up to about 14 MB,
/// and the daemon's pipe holds 64 KiB: a writer faster than the child fills it, sleeps, and is woken by each read that
/// makes room. On the project's 2-core machine those wake-ups took a fifth of the child's CPU (bench/README.md,
/// "stdin's pipe").
module internal InputPipe =
    /// The widest pipe an unprivileged process may ask for by default (/proc/sys/fs/pipe-max-size).
    let wide = 1 <<< 20

    /// The environment variable that sets the width in bytes; 0 leaves stdin's pipe as the daemon made it.
    [<Literal>]
    let Variable = "KCL_STDIN_PIPE_BYTES"

    /// The width asked for: `wide` unless the variable says otherwise; None to leave the pipe alone. The kernel
    /// rounds it up to a power-of-two number of pages.
    let requested (variable: string) =
        match variable with
        | null
        | "" -> Ok(Some wide)
        | text ->
            match Int32.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture) with
            | true, 0 -> Ok None
            | true, bytes -> Ok(Some bytes)
            | false, _ -> Error(Variable + "=\"" + text + "\" is not a whole number of bytes")

    /// How many probe pipes of `width` bytes must fit beside the widened stdin: together a quarter of the per-user
    /// soft limit on pipe memory (/proc/sys/fs/pipe-user-pages-soft; 0 means none). Past that limit Linux gives
    /// every new pipe of the user, in any program, the smallest size, so a worker with many children must keep room
    /// for the daemon's next ones.
    let probesFor (softLimitPages: int64) (pageSize: int64) (width: int) =
        if softLimitPages <= 0L || width <= 0 then
            0
        else
            let reserve = softLimitPages * pageSize / 4L
            int ((reserve + int64 width - 1L) / int64 width)

    /// What became of stdin's pipe, for the log.
    [<RequireQualifiedAccess>]
    type Outcome =
        /// stdin is not a pipe, or this is not Linux.
        | NotAPipe
        /// Left as it was: already as wide, or asked not to be widened.
        | Unchanged of bytes: int
        /// Widened from one size to the other.
        | Widened of before: int * after: int
        /// Left as it was because the user's pipe memory is near its limit, or the kernel refused.
        | Refused of bytes: int * reason: string
        /// Left as it was because the variable makes no sense.
        | Misconfigured of bytes: int * problem: string

    /// Widens a pipe of `current` bytes as `requested` says, if `roomFor` finds room for `probes` more pipes of that
    /// width beside it. `grow` asks the kernel and returns the new size, or None.
    let widen
        (current: int)
        (requested: Result<int option, string>)
        (probesFor: int -> int)
        (roomFor: int -> int -> bool)
        (grow: int -> int option)
        =
        match requested with
        | Error problem -> Outcome.Misconfigured(current, problem)
        | Ok None -> Outcome.Unchanged current
        | Ok(Some width) when current >= width -> Outcome.Unchanged current
        | Ok(Some width) ->
            if not (roomFor (probesFor width) width) then
                Outcome.Refused(current, "less than a quarter of the user's pipe memory limit would be left free")
            else
                match grow width with
                | Some after -> Outcome.Widened(current, after)
                | None -> Outcome.Refused(current, "the kernel refused")

    /// A line for the log at the level it deserves, or None where there is nothing to say.
    let describe (outcome: Outcome) =
        let bytes (n: int) =
            n.ToString(CultureInfo.InvariantCulture) + " bytes"

        match outcome with
        | Outcome.NotAPipe -> None
        | Outcome.Unchanged size -> Some(LogLevel.Debug, "stdin is a pipe of " + bytes size)
        | Outcome.Widened(before, after) ->
            Some(LogLevel.Debug, "stdin's pipe widened from " + bytes before + " to " + bytes after)
        | Outcome.Refused(size, reason) -> Some(LogLevel.Debug, "stdin's pipe left at " + bytes size + ": " + reason)
        | Outcome.Misconfigured(size, problem) ->
            Some(LogLevel.Warning, "stdin's pipe left at " + bytes size + ": " + problem)

/// The protocol's own standard streams, claimed once for the life of the process.
[<Sealed>]
type StandardStreams internal (input: Stream, output: Stream) =
    /// The daemon's messages: the process's stdin.
    member _.Input = input

    /// The protocol channel: a private duplicate of the original stdout.
    member _.Output = output

    /// Told of each SIGINT, SIGTERM and SIGHUP that was ignored; the running interpreter logs them.
    member val OnSignal: PosixSignal -> unit = ignore with get, set

    /// What became of stdin's pipe, for the run's log.
    member val internal InputPipe = InputPipe.Outcome.NotAPipe with get, set

/// Claims the real stdin and stdout for the protocol.
[<RequireQualifiedAccess>]
module Stdio =
    /// Raises the failure of `what`, with the error code read right after the call failed.
    let private fail what (error: int) =
        raise (IOException(what + " failed (error " + error.ToString(CultureInfo.InvariantCulture) + ")"))

    // The takeover runs before the daemon gets its `initialize` answer, so it stays off the costly first uses:
    // FileInfo.LinkTarget and Directory.GetFiles with Int32.TryParse cost a child about 10 ms more than the calls
    // below, and an F# format string (`$"...{fd}"`) about 20 ms and 3.5 MiB (bench/README.md, "Start-up").

    /// What an open file descriptor refers to, e.g. "pipe:[1234]" as bytes, where /proc tells (Linux).
    let private describeFd (fd: int) =
        let target = Array.zeroCreate<byte> 512
        let path = Text.Encoding.ASCII.GetBytes("/proc/self/fd/" + fd.ToString(CultureInfo.InvariantCulture) + "\000")
        use pathStart = fixed path
        use targetStart = fixed target

        let length =
            Native.readlink (
                NativePtr.toNativeInt pathStart,
                NativePtr.toNativeInt targetStart,
                nativeint target.Length
            )

        if length > 0n && length < nativeint target.Length then Some(Array.sub target 0 (int length)) else None

    /// The open file descriptors, as /proc/self/fd lists them (Linux); empty where there is no /proc.
    let private openFds () =
        // readdir's struct dirent puts the name after d_ino, d_off, d_reclen and d_type: byte 19 on 64-bit Linux,
        // glibc and musl alike. 32-bit layouts differ between the two, so those take the slower, portable way.
        if IntPtr.Size <> 8 then
            try
                Directory.GetFiles "/proc/self/fd"
                |> Array.choose (fun path ->
                    match Int32.TryParse(Path.GetFileName path, NumberStyles.None, CultureInfo.InvariantCulture) with
                    | true, fd -> Some fd
                    | _ -> None)
            with _ ->
                [||]
        else
            let path = "/proc/self/fd\000"B
            use pathStart = fixed path
            let directory = Native.opendir (NativePtr.toNativeInt pathStart)

            if directory = 0n then
                [||]
            else
                let fds = ResizeArray<int>()
                let mutable entry = Native.readdir directory

                while entry <> 0n do
                    let mutable name = entry + 19n
                    let mutable fd = 0
                    let mutable digits = 0
                    let mutable b = Marshal.ReadByte name

                    while b >= '0'B && b <= '9'B do
                        fd <- fd * 10 + int (b - '0'B)
                        digits <- digits + 1
                        name <- name + 1n
                        b <- Marshal.ReadByte name

                    // "." and ".." have no digits.
                    if digits > 0 && b = 0uy then fds.Add fd
                    entry <- Native.readdir directory

                Native.closedir directory |> ignore
                fds.ToArray()

    // F_SETPIPE_SZ and F_GETPIPE_SZ, and O_CLOEXEC (Linux).
    [<Literal>]
    let private SetPipeSize = 1031

    [<Literal>]
    let private GetPipeSize = 1032

    [<Literal>]
    let private CloseOnExec = 0x80000

    /// Points every other descriptor open on the original stdout at stderr. .NET's Console.Out keeps a duplicate of
    /// fd 1 of its own, so a writer or console logger built before the takeover would otherwise still reach the daemon.
    let private redirectDuplicates (original: byte[]) (keep: int) =
        for fd in openFds () do
            if fd > 2 && fd <> keep then
                match describeFd fd with
                | Some target when target.AsSpan().SequenceEqual(ReadOnlySpan original) ->
                    if Native.dup3 (2, fd, CloseOnExec) < 0 then
                        let error = Marshal.GetLastSystemError()
                        fail ("dup3(2, " + fd.ToString(CultureInfo.InvariantCulture) + ")") error
                | _ -> ()

    /// The per-user soft limit on pipe memory, in pages; 0 where there is none or it cannot be read.
    let private pipeSoftLimitPages () =
        try
            let mutable pages = 0L

            for digit in File.ReadAllBytes "/proc/sys/fs/pipe-user-pages-soft" do
                if digit >= '0'B && digit <= '9'B then
                    pages <- pages * 10L + int64 (digit - '0'B)

            pages
        with _ ->
            0L

    /// Whether `count` new pipes can be widened to `width` bytes all at once: the kernel counts them against the same
    /// limits as stdin's. They are closed again before it returns.
    let internal roomForPipes (count: int) (width: int) =
        let fds = Array.zeroCreate<int> (2 * count)
        let mutable opened = 0
        let mutable room = true
        use first = fixed fds

        try
            while room && opened < count do
                if Native.pipe2 (NativePtr.toNativeInt (NativePtr.add first (2 * opened)), CloseOnExec) <> 0 then
                    room <- false
                else
                    opened <- opened + 1
                    room <- Native.fcntl (fds[2 * opened - 1], SetPipeSize, width) >= 0
        finally
            for i in 0 .. 2 * opened - 1 do
                Native.close fds[i] |> ignore

        room

    /// Widens stdin when it is a pipe, as InputPipe says (Linux).
    let private widenInputPipe () =
        let current = Native.fcntl (0, GetPipeSize, 0)

        if current <= 0 then
            InputPipe.Outcome.NotAPipe
        else
            let grow width =
                let after = Native.fcntl (0, SetPipeSize, width)
                if after > 0 then Some after else None

            InputPipe.widen
                current
                (InputPipe.requested (Environment.GetEnvironmentVariable InputPipe.Variable))
                (fun width -> InputPipe.probesFor (pipeSoftLimitPages ()) (int64 Environment.SystemPageSize) width)
                roomForPipes
                grow

    let private claimUnixStdout () =
        let original = describeFd 1
        // F_DUPFD_CLOEXEC: the duplicate must not leak into processes that user code starts, or the daemon, which
        // drains our stdout until EOF when the shard ends, would wait for them too.
        let dupCloexec = if OperatingSystem.IsMacOS() || OperatingSystem.IsIOS() then 67 else 1030
        let privateFd = Native.fcntl (1, dupCloexec, 3)
        if privateFd < 0 then fail "fcntl(1, F_DUPFD_CLOEXEC)" (Marshal.GetLastSystemError())
        if Native.dup2 (2, 1) < 0 then fail "dup2(2, 1)" (Marshal.GetLastSystemError())
        // Only Linux has /proc to find them; elsewhere, writers built before the takeover keep the original stdout.
        original |> Option.iter (fun original -> redirectDuplicates original privateFd)
        new FileStream(new SafeFileHandle(nativeint privateFd, true), FileAccess.Write, 1) :> Stream

    // Unverified: no machine here runs Windows.
    let private claimWindowsStdout () =
        let stdOutput, stdError = -11, -12
        let original = Native.GetStdHandle stdOutput
        let mutable privateHandle = 0n
        let sameAccess = 2u
        let self = Native.GetCurrentProcess()

        if not (Native.DuplicateHandle(self, original, self, &privateHandle, 0u, false, sameAccess)) then
            fail "DuplicateHandle(stdout)" (Marshal.GetLastPInvokeError())

        if not (Native.SetStdHandle(stdOutput, Native.GetStdHandle stdError)) then
            fail "SetStdHandle(stdout, stderr)" (Marshal.GetLastPInvokeError())

        new FileStream(new SafeFileHandle(privateHandle, true), FileAccess.Write, 1) :> Stream

    let private ignoreSignals (streams: StandardStreams) =
        // Under the daemon, Ctrl-C reaches the whole process group; the daemon, not the child, decides when to stop.
        // The registrations live as long as the process.
        for signal in [ PosixSignal.SIGINT; PosixSignal.SIGTERM; PosixSignal.SIGHUP ] do
            PosixSignalRegistration.Create(
                signal,
                fun context ->
                    context.Cancel <- true
                    streams.OnSignal context.Signal
            )
            |> ignore

    let private gate = obj ()
    let mutable private claimed: StandardStreams option = None

    /// Takes stdout over at the file-descriptor level, points Console.Out at stderr, and ignores SIGINT, SIGTERM and
    /// SIGHUP. The first call does it; later calls return the same streams, so a host may claim stdout early and the
    /// run later. Runs over injected streams never call it.
    let takeOver () =
        lock gate (fun () ->
            match claimed with
            | Some streams -> streams
            | None ->
                let output =
                    if OperatingSystem.IsWindows() then claimWindowsStdout () else claimUnixStdout ()

                Console.SetOut Console.Error

                let input =
                    if OperatingSystem.IsWindows() then
                        Console.OpenStandardInput()
                    else
                        // A FileStream, so the interpreter knows it may block a thread of its own in read(2).
                        new FileStream(new SafeFileHandle(0n, false), FileAccess.Read, 1) :> Stream

                let streams = StandardStreams(input, output)

                if OperatingSystem.IsLinux() then
                    streams.InputPipe <- widenInputPipe ()

                ignoreSignals streams
                claimed <- Some streams
                streams)
