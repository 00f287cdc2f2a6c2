/// kcl-bootstrap: fetch and verify the daemon's jars, check the properties and Java, then print or run the command.
module Kcl.Bootstrap.Tool.Program

open System
open System.Threading
open Argu
open Kcl.Bootstrap
open Kcl.Bootstrap.Tool.Cli

[<EntryPoint>]
let main argv =
    let results =
        try
            Ok(parser.ParseCommandLine(argv, raiseOnUsage = true))
        with :? ArguParseException as e ->
            Error e

    match results with
    | Error e when e.ErrorCode = ErrorCode.HelpText ->
        printfn "%s" (parser.PrintUsage())
        ExitCode.Ok
    | Error e ->
        eprintfn "%s" e.Message
        ExitCode.Usage
    | Ok results ->
        let options = toOptions results
        let printClasspath = results.Contains Print_Classpath
        let getEnv = Environment.GetEnvironmentVariable >> Option.ofObj
        use client = Fetch.createClient ()

        let work report =
            Bootstrap.prepare
                client
                getEnv
                (eprintfn "warning: %s")
                report
                printClasspath
                options
                CancellationToken.None

        let prepared = (Progress.run work).GetAwaiter().GetResult()

        match prepared with
        | Error failure ->
            for m in failure.Messages do
                eprintfn "error: %s" m

            failure.ExitCode
        | Ok plan ->
            match plan.Command with
            | None ->
                printfn "%s" plan.Classpath
                ExitCode.Ok
            | Some _ when printClasspath ->
                printfn "%s" plan.Classpath
                ExitCode.Ok
            | Some command when results.Contains Execute ->
                match Launch.execute command with
                | Ok code -> code
                | Error message ->
                    eprintfn "error: %s" message
                    ExitCode.Java
            | Some command ->
                printfn "%s" (Command.render Platform.current command)
                ExitCode.Ok
