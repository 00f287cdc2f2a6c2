(*
    Starting a processor as the daemon does (PROTOCOL.md §1): the command from `executableName`, no shell, the
    daemon's working directory and environment, and the three standard streams as pipes.
*)
namespace Kcl.Local

open System
open System.Diagnostics
open System.IO
open System.IO.Pipes
open System.Runtime.InteropServices

module private Native =
    [<DllImport("libc", SetLastError = true)>]
    extern int fcntl(int fd, int cmd, int arg)

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
