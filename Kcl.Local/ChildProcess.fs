(*
    Starting a processor as the daemon does (PROTOCOL.md §1): the command from `executableName`, no shell, the
    daemon's working directory and environment, and the three standard streams as pipes.
*)
namespace Kcl.Local

#nowarn "9" // a pointer into a pinned array, for vmsplice

open System
open System.Diagnostics
open System.IO
open System.IO.Pipes
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks
open Microsoft.FSharp.NativeInterop

module private Native =
    [<DllImport("libc", SetLastError = true)>]
    extern int fcntl(int fd, int cmd, int arg)

    /// One piece of memory for vmsplice: `struct iovec`.
    [<Struct; StructLayout(LayoutKind.Sequential)>]
    type IoVec =
        val mutable Base: nativeint
        val mutable Length: unativeint

    [<DllImport("libc", SetLastError = true)>]
    extern nativeint vmsplice(int fd, IoVec& iov, unativeint count, uint32 flags)

/// A started child as its driver uses it: its three standard streams and its exit.
type internal ChildPipes =
    inherit IDisposable
    /// Writes to the child's stdin.
    abstract Stdin: Stream
    /// Reads the child's stdout.
    abstract Stdout: Stream
    /// Reads the child's stderr as text.
    abstract Stderr: StreamReader
    /// The exit code, once the child has exited.
    abstract ExitCode: int option
    /// Completes when the child has exited, or faults when the token is cancelled.
    abstract WaitForExitAsync: CancellationToken -> Task
    /// Ends the child and its descendants at once.
    abstract Kill: unit -> unit

/// Starting child processes.
[<RequireQualifiedAccess>]
module ChildProcess =
    let private isExecutableFile (path: string) =
        File.Exists path
        && (OperatingSystem.IsWindows()
            || (File.GetUnixFileMode path
                &&& (UnixFileMode.UserExecute
                     ||| UnixFileMode.GroupExecute
                     ||| UnixFileMode.OtherExecute))
               <> UnixFileMode.None)

    // F_SETPIPE_SZ (Linux): a pipe's capacity. The default 64 KiB takes a 500-record batch of 1 KiB records (about
    // 0.7 MB) in a dozen writes, each waiting for the child to read and each an epoll wake-up and a thread hop here;
    // at 1 MiB (the unprivileged limit, /proc/sys/fs/pipe-max-size) such a batch goes in one write while the child
    // reads. A refusal only leaves the default.
    let private setPipeSize = 1031
    let private pipeSize = 1 <<< 20

    // Only so many live children get the wide pipe: past the per-user soft limit (/proc/sys/fs/pipe-user-pages-soft,
    // 64 MiB by default) Linux gives every new pipe of the user, in any program, the smallest size.
    let private widePipeLimit = 16
    let private widePipes = ref 0

    let private widen (child: Process) =
        match child.StandardInput.BaseStream with
        | :? PipeStream as pipe when OperatingSystem.IsLinux() ->
            if Threading.Interlocked.Increment &widePipes.contents <= widePipeLimit then
                child.Exited.Add(fun _ -> Threading.Interlocked.Decrement &widePipes.contents |> ignore)
                child.EnableRaisingEvents <- true
                Native.fcntl (int (pipe.SafePipeHandle.DangerousGetHandle()), setPipeSize, pipeSize) |> ignore
            else
                Threading.Interlocked.Decrement &widePipes.contents |> ignore
        | _ -> ()

    // SPLICE_F_NONBLOCK: take what the pipe has room for now, never wait for the child to read.
    let private spliceNonBlocking = 2u

    /// Puts the first bytes of the segment into a pipe by reference (Linux `vmsplice`), as many as it has room for
    /// now, and returns how many: 0 on other systems, for other streams and on any error, leaving the caller to write
    /// the rest. Copying a 0.7 MB batch into the pipe took about 15% of kcl-local's CPU time in a profile, and it lay
    /// between a child's status and its next batch. The pipe holds the array's pages, not a copy, until the child has
    /// read them, so the array must be on the pinned heap and must not change until the child has read past them.
    let internal splice (stdin: Stream) (bytes: ArraySegment<byte>) : int =
        match stdin with
        | :? PipeStream as pipe when OperatingSystem.IsLinux() && bytes.Count > 0 ->
            use start = fixed &bytes.Array[bytes.Offset]
            let mutable piece = Native.IoVec()
            piece.Base <- NativePtr.toNativeInt start
            piece.Length <- unativeint bytes.Count
            let fd = int (pipe.SafePipeHandle.DangerousGetHandle())
            max 0 (int (Native.vmsplice (fd, &piece, 1un, spliceNonBlocking)))
        | _ -> 0

    /// A started process as its driver uses it.
    let internal pipes (child: Process) =
        { new ChildPipes with
            member _.Stdin = child.StandardInput.BaseStream
            member _.Stdout = child.StandardOutput.BaseStream
            member _.Stderr = child.StandardError
            member _.ExitCode = if child.HasExited then Some child.ExitCode else None
            member _.WaitForExitAsync token = child.WaitForExitAsync token
            member _.Kill() = child.Kill true
            member _.Dispose() = child.Dispose()
        }

    /// The file a program name names, as `ProcessBuilder` finds it: a name with a directory separator is a path
    /// relative to the working directory; a bare name is looked up on PATH. `None` when nothing fits.
    let resolve (workingDirectory: string) (program: string) : string option =
        if program.Contains '/' || program.Contains Path.DirectorySeparatorChar then
            let full = Path.GetFullPath(Path.Combine(workingDirectory, program))
            if File.Exists full then Some full else None
        else
            let path =
                Environment.GetEnvironmentVariable "PATH"
                |> Option.ofObj
                |> Option.defaultValue ""

            let extensions =
                if OperatingSystem.IsWindows() then
                    [ ""; ".exe"; ".cmd"; ".bat" ]
                else
                    [ "" ]

            path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            |> Seq.collect (fun dir -> extensions |> Seq.map (fun ext -> Path.Combine(dir, program + ext)))
            |> Seq.tryFind isExecutableFile

    /// Starts the command with redirected standard streams, or says why it cannot (the daemon's "Failed to start
    /// client executable").
    let start (workingDirectory: string) (command: string list) : Result<Process, string> =
        match command with
        | [] -> Error "Failed to start client executable: the command is empty"
        | program :: arguments ->
            match resolve workingDirectory program with
            | None ->
                Error(
                    sprintf
                        "Failed to start client executable: %s was not found (relative to %s, or on PATH)"
                        program
                        workingDirectory
                )
            | Some file ->
                let info =
                    ProcessStartInfo(
                        file,
                        WorkingDirectory = workingDirectory,
                        UseShellExecute = false,
                        RedirectStandardInput = true,
                        RedirectStandardOutput = true,
                        RedirectStandardError = true
                    )

                for argument in arguments do
                    info.ArgumentList.Add argument

                try
                    let child = Process.Start info
                    widen child
                    Ok child
                with e ->
                    Error(sprintf "Failed to start client executable %s: %s" file e.Message)
