(*
    Diagnostics in the one-line format of POLICY.md "Logging": time, level, shard id and message, no colour codes.
    The daemon logs every stderr line of every child at ERROR level, so one entry must be one line.
*)
namespace Kcl.Core

open System
open System.Collections.Generic
open System.IO
open Microsoft.Extensions.Logging

/// The scope key under which the interpreter names the shard in every log entry.
module LogScope =
    /// The key of the shard id in logging scopes.
    [<Literal>]
    let ShardId = "ShardId"

/// The scope that names the shard: one key-value pair for any provider, read directly by the library's own. A plain
/// class rather than F#'s `dict`, whose dictionary over F# struct boxes is JIT-compiled on first use, before the child
/// can answer `initialize`.
[<Sealed>]
type internal ShardScope(shard: string) =
    let pair = KeyValuePair<string, obj>(LogScope.ShardId, shard)

    /// The shard id.
    member _.Shard = shard

    override _.ToString() = LogScope.ShardId + ":" + shard

    interface IReadOnlyList<KeyValuePair<string, obj>> with
        member _.Count = 1

        member _.Item
            with get index = if index = 0 then pair else raise (ArgumentOutOfRangeException(nameof index))

        member _.GetEnumerator() : IEnumerator<KeyValuePair<string, obj>> = new ShardScopeEnumerator(pair)

        member _.GetEnumerator() : Collections.IEnumerator = new ShardScopeEnumerator(pair)

and [<Sealed>] internal ShardScopeEnumerator(pair: KeyValuePair<string, obj>) =
    let mutable position = -1

    interface IEnumerator<KeyValuePair<string, obj>> with
        member _.Current = pair

    interface Collections.IEnumerator with
        member _.Current = box pair

        member _.MoveNext() =
            position <- position + 1
            position = 0

        member _.Reset() = position <- -1

    interface IDisposable with
        member _.Dispose() = ()

/// Where library and user diagnostics go: stderr by default, a file when KCL_LOG_FILE says so.
[<Sealed>]
type KclLoggerProvider(writer: TextWriter, minimumLevel: LogLevel) =
    let gate = obj ()
    let mutable scopes: IExternalScopeProvider = LoggerExternalScopeProvider()

    static let levelName level =
        match level with
        | LogLevel.Trace -> "TRACE"
        | LogLevel.Debug -> "DEBUG"
        | LogLevel.Information -> "INFO "
        | LogLevel.Warning -> "WARN "
        | LogLevel.Error -> "ERROR"
        | LogLevel.Critical -> "CRIT "
        | _ -> "NONE "

    static let oneLine (text: string) =
        // A plain scan first: ReplaceLineEndings' vectorised search is JIT-compiled on first use, and most messages
        // are one line already.
        let mutable multiline = false
        let mutable i = 0

        while not multiline && i < text.Length do
            match text[i] with
            | '\n'
            | '\r'
            | '\f'
            | '\u0085'
            | '\u2028'
            | '\u2029' -> multiline <- true
            | _ -> i <- i + 1

        if multiline then text.ReplaceLineEndings(" | ") else text

    /// The time as yyyy-MM-ddTHH:mm:ss.fffZ, written digit by digit: the first custom DateTime format JIT-compiles
    /// its generic formatting helpers, a cost the first log entry pays before `initialize` is answered.
    static let timestamp (now: DateTime) =
        let text = Array.zeroCreate<char> 24

        let digits (index: int) (count: int) (value: int) =
            let mutable value = value

            for i in index + count - 1 .. -1 .. index do
                text[i] <- char (48 + value % 10)
                value <- value / 10

        digits 0 4 now.Year
        text[4] <- '-'
        digits 5 2 now.Month
        text[7] <- '-'
        digits 8 2 now.Day
        text[10] <- 'T'
        digits 11 2 now.Hour
        text[13] <- ':'
        digits 14 2 now.Minute
        text[16] <- ':'
        digits 17 2 now.Second
        text[19] <- '.'
        digits 20 3 now.Millisecond
        text[23] <- 'Z'
        String(text)

    /// Reads `KCL_LOG_LEVEL` (trace, debug, information or info, warning or warn, error, critical, none).
    static member LevelFromEnvironment(fallback: LogLevel) =
        match Environment.GetEnvironmentVariable "KCL_LOG_LEVEL" with
        | null
        | "" -> fallback
        | text ->
            match text.Trim().ToLowerInvariant() with
            | "trace" -> LogLevel.Trace
            | "debug" -> LogLevel.Debug
            | "info"
            | "information" -> LogLevel.Information
            | "warn"
            | "warning" -> LogLevel.Warning
            | "error" -> LogLevel.Error
            | "critical" -> LogLevel.Critical
            | "none" -> LogLevel.None
            | _ -> fallback

    /// A provider that honours `KCL_LOG_LEVEL` and `KCL_LOG_FILE`, writing to `stderr` when no file is named.
    static member FromEnvironment(stderr: TextWriter) =
        let level = KclLoggerProvider.LevelFromEnvironment LogLevel.Information

        let writer =
            match Environment.GetEnvironmentVariable "KCL_LOG_FILE" with
            | null
            | "" -> stderr
            | path ->
                let stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)
                new StreamWriter(stream, Text.UTF8Encoding(false), AutoFlush = true) :> TextWriter

        new KclLoggerProvider(writer, level)

    /// The least severe level written.
    member _.MinimumLevel = minimumLevel

    /// A logger factory over this provider alone. Unlike `LoggerFactory.Create`, it builds no dependency-injection
    /// container, which costs a child about 50 ms of start-up; the daemon waits for the `initialize` answer.
    member this.CreateFactory() : ILoggerFactory = new KclLoggerFactory(this)

    member internal _.Scopes = scopes

    member internal _.Write(level: LogLevel, category: string, message: string, error: exn) =
        let mutable shard = "-"

        scopes.ForEachScope(
            (fun scope _ ->
                match scope with
                | :? ShardScope as named -> shard <- named.Shard
                | :? IEnumerable<KeyValuePair<string, obj>> as pairs ->
                    for pair in pairs do
                        if pair.Key = LogScope.ShardId then shard <- string pair.Value
                | _ -> ()),
            ()
        )

        let text =
            if isNull error then message else message + " " + error.ToString()

        // Concatenated, not interpolated: an F# interpolated string with this many holes goes through the printf
        // machinery, whose first use costs a child about 20 ms and 3.5 MiB before it can answer `initialize`. The
        // time is written without a culture, so it stays Gregorian whatever the locale.
        let line =
            String.Concat(
                [|
                    timestamp DateTime.UtcNow
                    " "
                    levelName level
                    " ["
                    shard
                    "] "
                    category
                    ": "
                    oneLine text
                |]
            )

        lock gate (fun () ->
            writer.WriteLine line
            writer.Flush())

    interface ILoggerProvider with
        member this.CreateLogger(category) = KclLogger(this, category, minimumLevel)

    interface ISupportExternalScope with
        member _.SetScopeProvider provider = scopes <- provider

    interface IDisposable with
        member _.Dispose() =
            if not (obj.ReferenceEquals(writer, Console.Error)) then
                writer.Flush()

and [<Sealed>] internal KclLogger(provider: KclLoggerProvider, category: string, minimumLevel: LogLevel) =
    interface ILogger with
        member _.IsEnabled level =
            level <> LogLevel.None && level >= minimumLevel

        member this.Log(level, _eventId, state, error, formatter) =
            if (this :> ILogger).IsEnabled level then
                provider.Write(level, category, formatter.Invoke(state, error), error)

        // Under LoggerFactory the factory keeps the scopes (ISupportExternalScope); alone, the provider does.
        member _.BeginScope state = provider.Scopes.Push state

and [<Sealed>] internal KclLoggerFactory(provider: KclLoggerProvider) =
    interface ILoggerFactory with
        member _.CreateLogger category =
            (provider :> ILoggerProvider).CreateLogger category

        member _.AddProvider _ =
            invalidOp "this factory writes through the library's own provider only; use LoggerFactory.Create to combine providers"

    interface IDisposable with
        member _.Dispose() = (provider :> IDisposable).Dispose()
