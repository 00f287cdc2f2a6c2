(*
    Command --- the daemon's command line as a value, and its shell-quoted rendering. Pure.
*)
namespace Kcl.Bootstrap

open System
open System.Text

/// What a launch needs, once every check has passed.
type LaunchSpec =
    {
        /// The java executable.
        Java: string
        /// JVM options, in order, before -cp (the user's, then the bootstrap's -Dfile.encoding when needed).
        JvmArgs: string list
        /// The full classpath string.
        Classpath: string
        /// The daemon's main class.
        MainClass: string
        /// The properties file.
        PropertiesFile: string
        /// The logback configuration file, if any.
        LogConfiguration: string option
        /// KCL 2.1+ takes --properties-file; older daemons take the file as their only argument.
        PropertiesAsOption: bool
    }

/// A program and its arguments, never joined into one string for execution.
type Command =
    {
        /// The program to run.
        Program: string
        /// Its arguments, one element each, spaces and all.
        Arguments: string list
    }

/// Building and rendering the daemon's command.
[<RequireQualifiedAccess>]
module Command =
    /// java [jvm options] -cp <classpath> <main class> --properties-file <file> [--log-configuration <file>].
    let build (spec: LaunchSpec) : Command =
        {
            Program = spec.Java
            Arguments =
                [
                    yield! spec.JvmArgs
                    "-cp"
                    spec.Classpath
                    spec.MainClass
                    if spec.PropertiesAsOption then
                        "--properties-file"
                    spec.PropertiesFile
                    match spec.LogConfiguration with
                    | Some file when spec.PropertiesAsOption ->
                        "--log-configuration"
                        file
                    | _ -> ()
                ]
        }

    /// Quotes one word for a POSIX shell: left bare when it holds only safe characters, else single-quoted.
    let quotePosix (word: string) =
        let safe (c: char) =
            Char.IsAsciiLetterOrDigit c || "@%+=:,./-_".Contains c

        if word <> "" && Seq.forall safe word then
            word
        else
            "'" + word.Replace("'", "'\\''") + "'"

    /// Quotes one word as the Windows C runtime (CommandLineToArgvW) splits a command line: double quotes, with
    /// backslashes doubled only before a quote.
    let quoteWindows (word: string) =
        if word <> "" && not (word |> Seq.exists (fun c -> Char.IsWhiteSpace c || c = '"')) then
            word
        else
            let b = StringBuilder("\"")
            let mutable backslashes = 0

            for c in word do
                if c = '\\' then
                    backslashes <- backslashes + 1
                elif c = '"' then
                    b.Append('\\', 2 * backslashes + 1).Append('"') |> ignore
                    backslashes <- 0
                else
                    b.Append('\\', backslashes).Append(c) |> ignore
                    backslashes <- 0

            b.Append('\\', 2 * backslashes).Append('"').ToString()

    /// The command as one line a user can paste into the platform's shell.
    let render (platform: Platform) (command: Command) =
        let quote = if platform.IsWindows then quoteWindows else quotePosix
        String.Join(" ", command.Program :: command.Arguments |> List.map quote)
