(*
    Fetch --- jars from a Maven-layout repository into the cache, verified and atomic.

    A jar is only ever visible under its final name after its digest matched: it is downloaded to a temporary file
    in the same folder, hashed while it streams, and renamed into place. The digest it matched is stored beside it,
    so a warm cache re-verifies every jar without asking the network anything.
*)
namespace Kcl.Bootstrap

open System
open System.IO
open System.Net
open System.Net.Http
open System.Security.Cryptography
open System.Threading
open System.Threading.Tasks

/// How and where to fetch.
type FetchSettings =
    {
        /// The Maven-layout repository's base URL: http(s):// or file://.
        Repository: Uri
        /// The cache root; jars go under <root>/<kcl-version>/.
        CacheRoot: string
        /// When true nothing is downloaded: a missing or unverifiable jar is an error.
        Offline: bool
        /// How many jars download at once.
        Parallelism: int
        /// How many times one file is tried before its failure is final.
        MaxAttempts: int
        /// The first retry's delay; each later one doubles, up to BackoffCap.
        BackoffBase: TimeSpan
        /// The longest delay between two attempts, including one asked for by Retry-After.
        BackoffCap: TimeSpan
    }

/// What the fetch reports as it goes; the tool turns these into a progress display.
[<RequireQualifiedAccess>]
type FetchEvent =
    /// The fetch starts with this many jars to verify or download.
    | Started of jars: int
    /// Bytes of a download arrived.
    | Received of coordinate: Coordinate * bytes: int64
    /// A jar is in the cache and verified; fromCache is false when it was just downloaded.
    | Verified of coordinate: Coordinate * path: string * bytes: int64 * fromCache: bool
    /// An attempt failed transiently and another follows after the delay.
    | Retrying of coordinate: Coordinate * url: string * attempt: int * delay: TimeSpan * reason: string

/// Why a jar could not be provided.
[<RequireQualifiedAccess>]
type FetchError =
    /// The repository has no such file (HTTP 404 or 410, or a missing file:// path); final.
    | NotFound of coordinate: Coordinate * url: string
    /// The jar's bytes do not match the expected digest; the file was deleted.
    | ChecksumMismatch of coordinate: Coordinate * source: string * expected: Digest * actual: Digest
    /// Every attempt failed (HTTP status, connection error or truncated body); the last reason is kept.
    | Failed of coordinate: Coordinate * url: string * attempts: int * reason: string
    /// --offline, and the jar is missing or no longer matches its recorded digest.
    | MissingOffline of coordinate: Coordinate * path: string * reason: string

    /// A one-line explanation naming the jar.
    member this.Message =
        match this with
        | NotFound(c, url) -> sprintf "%s: not found in the repository (%s)" (string c) url
        | ChecksumMismatch(c, source, expected, actual) ->
            sprintf
                "%s: checksum mismatch for %s: expected %s, got %s; the file was deleted"
                (string c)
                source
                (string expected)
                (string actual)
        | Failed(c, url, attempts, reason) ->
            sprintf "%s: download failed after %d attempt(s) (%s): %s" (string c) attempts url reason
        | MissingOffline(c, path, reason) ->
            sprintf "%s: %s at %s, and --offline forbids downloading" (string c) reason path

/// The verified jars, in manifest order.
type FetchResult =
    {
        /// The jar paths, in manifest order.
        Jars: string list
        /// How many jars were downloaded (the rest came from the cache).
        Downloaded: int
        /// Total bytes of the jars.
        Bytes: int64
    }

/// Fetching a manifest's jars.
[<RequireQualifiedAccess>]
module Fetch =
    /// Maven Central, the default repository.
    [<Literal>]
    let MavenCentral = "https://repo1.maven.org/maven2/"

    /// Default settings for a cache root: Maven Central, 8 parallel downloads, 5 attempts from 500 ms to 30 s.
    let defaults (cacheRoot: string) =
        {
            Repository = Uri MavenCentral
            CacheRoot = cacheRoot
            Offline = false
            Parallelism = 8
            MaxAttempts = 5
            BackoffBase = TimeSpan.FromMilliseconds 500.0
            BackoffCap = TimeSpan.FromSeconds 30.0
        }

    /// The default cache root: <user cache dir>/kcl-bootstrap (XDG_CACHE_HOME, ~/.cache, or LocalApplicationData).
    let defaultCacheRoot () =
        let xdg = Environment.GetEnvironmentVariable "XDG_CACHE_HOME"

        let root =
            if not (String.IsNullOrEmpty xdg) then
                xdg
            elif OperatingSystem.IsWindows() then
                Environment.GetFolderPath Environment.SpecialFolder.LocalApplicationData
            else
                Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache")

        Path.Combine(root, "kcl-bootstrap")

    /// An HttpClient for repositories. The platform's default proxy applies, which on Unix reads HTTPS_PROXY,
    /// HTTP_PROXY and NO_PROXY (and on Windows also the system settings).
    let createClient () =
        let handler =
            new SocketsHttpHandler(
                UseProxy = true,
                AutomaticDecompression = DecompressionMethods.None,
                ConnectTimeout = TimeSpan.FromSeconds 30.0
            )

        let client = new HttpClient(handler, Timeout = TimeSpan.FromMinutes 10.0)
        client.DefaultRequestHeaders.UserAgent.ParseAdd "kcl-bootstrap/0.1"
        client

    let private hashAlgorithm (digest: Digest) =
        match digest with
        | Digest.Sha1 _ -> HashAlgorithmName.SHA1
        | Digest.Sha256 _ -> HashAlgorithmName.SHA256

    let private digestOf (template: Digest) (bytes: byte[]) =
        let hex = Convert.ToHexStringLower bytes

        match template with
        | Digest.Sha1 _ -> Digest.Sha1 hex
        | Digest.Sha256 _ -> Digest.Sha256 hex

    /// Hashes a file with the expected digest's algorithm.
    let hashFile (expected: Digest) (path: string) =
        use stream =
            new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 <<< 16)

        let bytes =
            match expected with
            | Digest.Sha1 _ -> SHA1.HashData stream
            | Digest.Sha256 _ -> SHA256.HashData stream

        digestOf expected bytes

    /// Reads a checksum file's text: the first whitespace-delimited token, as some old uploads append the name.
    let parseChecksum (algorithm: string) (text: string) : Digest option =
        let token =
            text.Split([| ' '; '\t'; '\r'; '\n' |], StringSplitOptions.RemoveEmptyEntries)
            |> Array.tryHead
            |> Option.map _.ToLowerInvariant()

        match algorithm, token with
        | "sha1", Some t when t.Length = 40 && Seq.forall Uri.IsHexDigit t -> Some(Digest.Sha1 t)
        | "sha256", Some t when t.Length = 64 && Seq.forall Uri.IsHexDigit t -> Some(Digest.Sha256 t)
        | _ -> None

    // The digest a jar was verified against is stored beside it, as <jar>.sha256 or <jar>.sha1.
    let private sidecar (jar: string) (algorithm: string) = jar + "." + algorithm

    let private recordedDigest (jar: string) =
        [ "sha256"; "sha1" ]
        |> List.tryPick (fun algorithm ->
            let file = sidecar jar algorithm

            if File.Exists file then
                parseChecksum algorithm (File.ReadAllText file)
            else
                None)

    let private deleteQuietly (path: string) =
        try
            File.Delete path
        with _ ->
            ()

    let private writeAtomically (path: string) (text: string) =
        let temp = sprintf "%s.%s.part" path (Guid.NewGuid().ToString "N")
        File.WriteAllText(temp, text)
        File.Move(temp, path, true)

    // One attempt's outcome: a value, a final error, or a transient failure to retry (with the server's wish).
    type private Attempt<'T> =
        | Done of 'T
        | Final of FetchError
        | Transient of reason: string * retryAfter: TimeSpan option

    let private retryAfterOf (response: HttpResponseMessage) =
        match response.Headers.RetryAfter with
        | null -> None
        | ra when ra.Delta.HasValue -> Some ra.Delta.Value
        | ra when ra.Date.HasValue -> Some(max TimeSpan.Zero (ra.Date.Value - DateTimeOffset.UtcNow))
        | _ -> None

    let private isTransientStatus (status: HttpStatusCode) =
        status = HttpStatusCode.TooManyRequests
        || status = HttpStatusCode.RequestTimeout
        || int status >= 500

    /// Runs attempts until one is not transient, waiting between them; the last transient reason becomes Failed.
    let private withRetries settings report coordinate (url: Uri) (attempt: unit -> Task<Attempt<'T>>) =
        task {
            let mutable result = None
            let mutable number = 0

            while result.IsNone do
                number <- number + 1
                let! outcome = attempt ()

                match outcome with
                | Done value -> result <- Some(Ok value)
                | Final error -> result <- Some(Error error)
                | Transient(reason, retryAfter) when number < settings.MaxAttempts ->
                    let backoff =
                        settings.BackoffBase.TotalMilliseconds * Math.Pow(2.0, float (number - 1))
                        |> TimeSpan.FromMilliseconds

                    let delay = min settings.BackoffCap (defaultArg retryAfter backoff)
                    report (FetchEvent.Retrying(coordinate, string url, number, delay, reason))
                    do! Task.Delay delay
                | Transient(reason, _) ->
                    result <- Some(Error(FetchError.Failed(coordinate, string url, number, reason)))

            return result.Value
        }

    /// Opens a repository file: Ok stream, or an attempt outcome to return instead.
    let private openSource (client: HttpClient) (coordinate: Coordinate) (url: Uri) (ct: CancellationToken) =
        task {
            if url.IsFile then
                if File.Exists url.LocalPath then
                    return Ok(File.OpenRead url.LocalPath :> Stream, (fun () -> ()))
                else
                    return Error(Final(FetchError.NotFound(coordinate, string url)))
            else
                try
                    let! response = client.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, ct)

                    if response.IsSuccessStatusCode then
                        let! stream = response.Content.ReadAsStreamAsync ct
                        return Ok(stream, response.Dispose)
                    else
                        let status = response.StatusCode
                        let retryAfter = retryAfterOf response
                        response.Dispose()

                        if status = HttpStatusCode.NotFound || status = HttpStatusCode.Gone then
                            return Error(Final(FetchError.NotFound(coordinate, string url)))
                        elif isTransientStatus status then
                            return Error(Transient(sprintf "HTTP %d %O" (int status) status, retryAfter))
                        else
                            return
                                Error(
                                    Final(
                                        FetchError.Failed(
                                            coordinate,
                                            string url,
                                            1,
                                            sprintf "HTTP %d %O" (int status) status
                                        )
                                    )
                                )
                with
                | :? HttpRequestException as e -> return Error(Transient(e.Message, None))
                | :? IOException as e -> return Error(Transient(e.Message, None))
                | :? TaskCanceledException as e when not ct.IsCancellationRequested ->
                    return Error(Transient("timed out: " + e.Message, None))
        }

    // Fetches the expected digest from the repository: .sha256 where it exists, else .sha1.
    let private fetchChecksum client settings report coordinate (jarUrl: Uri) ct =
        let one algorithm =
            let url = Uri(jarUrl.AbsoluteUri + "." + algorithm)

            withRetries settings report coordinate url (fun () ->
                task {
                    match! openSource client coordinate url ct with
                    | Error outcome -> return outcome
                    | Ok(stream, dispose) ->
                        try
                            try
                                use reader = new StreamReader(stream)
                                let! text = reader.ReadToEndAsync ct

                                match parseChecksum algorithm text with
                                | Some digest -> return Done digest
                                | None ->
                                    return
                                        Final(
                                            FetchError.Failed(
                                                coordinate,
                                                string url,
                                                1,
                                                "the checksum file holds no " + algorithm + " digest"
                                            )
                                        )
                            with
                            | :? HttpRequestException as e -> return Transient(e.Message, None)
                            | :? IOException as e -> return Transient(e.Message, None)
                        finally
                            dispose ()
                })

        task {
            match! one "sha256" with
            | Error(FetchError.NotFound _) -> return! one "sha1"
            | other -> return other
        }

    // Downloads into a temporary file beside the jar, hashing as it streams; on success the temp file's path.
    let private download client settings report coordinate (url: Uri) (expected: Digest) (jar: string) ct =
        withRetries settings report coordinate url (fun () ->
            task {
                match! openSource client coordinate url ct with
                | Error outcome -> return outcome
                | Ok(source, dispose) ->
                    let temp = sprintf "%s.%s.part" jar (Guid.NewGuid().ToString "N")

                    try
                        try
                            use hash = IncrementalHash.CreateHash(hashAlgorithm expected)
                            let buffer = Array.zeroCreate<byte>(1 <<< 16)

                            do!
                                task {
                                    use target =
                                        new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None)

                                    let mutable read = -1

                                    while read <> 0 do
                                        let! n = source.ReadAsync(buffer.AsMemory(), ct)
                                        read <- n

                                        if n > 0 then
                                            hash.AppendData(buffer, 0, n)
                                            do! target.WriteAsync(buffer.AsMemory(0, n), ct)
                                            report (FetchEvent.Received(coordinate, int64 n))
                                }

                            let actual = digestOf expected (hash.GetHashAndReset())

                            if actual.Hex = expected.Hex then
                                return Done temp
                            else
                                deleteQuietly temp
                                return Final(FetchError.ChecksumMismatch(coordinate, string url, expected, actual))
                        with
                        | :? HttpRequestException as e ->
                            deleteQuietly temp
                            return Transient(e.Message, None)
                        | :? IOException as e ->
                            deleteQuietly temp
                            return Transient(e.Message, None)
                        | e ->
                            deleteQuietly temp
                            return raise e
                    finally
                        source.Dispose()
                        dispose ()
            })

    let private fetchOne
        (client: HttpClient)
        settings
        report
        kclVersion
        (entry: ManifestEntry)
        (ct: CancellationToken)
        =
        task {
            let coordinate = entry.Coordinate

            let jar =
                Classpath.jarPath Platform.current settings.CacheRoot kclVersion coordinate

            let cached =
                if File.Exists jar then
                    match
                        (match entry.Pinned with
                         | Some d -> Some d
                         | None -> recordedDigest jar)
                    with
                    | Some expected when hashFile expected jar = expected -> Ok()
                    | Some _ -> Error "the cached jar no longer matches its digest"
                    | None -> Error "the cached jar has no recorded digest"
                else
                    Error "the jar is missing"

            match cached with
            | Ok() ->
                report (FetchEvent.Verified(coordinate, jar, FileInfo(jar).Length, true))
                return Ok(jar, false)
            | Error reason when settings.Offline -> return Error(FetchError.MissingOffline(coordinate, jar, reason))
            | Error _ ->
                // Nothing is deleted before the download: a parallel run into the same cache may have put a good jar
                // there since the check above. The new digest and jar replace the old ones atomically below.
                let folder = Directory.CreateDirectory(Path.GetDirectoryName jar)

                // Temporary files of killed runs; young ones may belong to a parallel run still writing them.
                for part in folder.GetFiles(Path.GetFileName jar + ".*.part") do
                    if part.LastWriteTimeUtc < DateTime.UtcNow.AddHours -1.0 then
                        deleteQuietly part.FullName

                let url = Coordinate.url settings.Repository coordinate

                let! expected =
                    match entry.Pinned with
                    | Some digest -> Task.FromResult(Ok digest)
                    | None -> fetchChecksum client settings report coordinate url ct

                match expected with
                | Error e -> return Error e
                | Ok expected ->
                    match! download client settings report coordinate url expected jar ct with
                    | Error e -> return Error e
                    | Ok temp ->
                        // The digest goes first: a jar under its final name always has one to be checked against.
                        // A digest of the other algorithm would be read first, or stay behind stale.
                        for other in [ "sha1"; "sha256" ] do
                            if other <> expected.Algorithm then
                                deleteQuietly (sidecar jar other)

                        writeAtomically (sidecar jar expected.Algorithm) (expected.Hex + "\n")
                        File.Move(temp, jar, true)
                        report (FetchEvent.Verified(coordinate, jar, FileInfo(jar).Length, false))
                        return Ok(jar, true)
        }

    /// Verifies every jar of the manifest in the cache and downloads the missing or broken ones, in parallel.
    /// Returns the jar paths in manifest order, or every jar's error.
    let run
        (client: HttpClient)
        (settings: FetchSettings)
        (report: FetchEvent -> unit)
        (manifest: Manifest)
        (ct: CancellationToken)
        : Task<Result<FetchResult, FetchError list>> =
        task {
            let entries = Array.ofList manifest.Entries
            let results = Array.zeroCreate entries.Length
            report (FetchEvent.Started entries.Length)

            let options =
                ParallelOptions(MaxDegreeOfParallelism = max 1 settings.Parallelism, CancellationToken = ct)

            do!
                Parallel.ForEachAsync(
                    [ 0 .. entries.Length - 1 ],
                    options,
                    fun i ct ->
                        task {
                            let! r = fetchOne client settings report manifest.KclVersion entries.[i] ct
                            results.[i] <- r
                        }
                        |> ValueTask
                )

            let errors =
                results
                |> Array.choose (function
                    | Error e -> Some e
                    | Ok _ -> None)

            if errors.Length > 0 then
                return Error(List.ofArray errors)
            else
                let jars =
                    results
                    |> Array.choose (function
                        | Ok r -> Some r
                        | Error _ -> None)

                return
                    Ok
                        {
                            Jars = List.ofArray (Array.map fst jars)
                            Downloaded = jars |> Array.filter snd |> Array.length
                            Bytes = jars |> Array.sumBy (fun (j, _) -> FileInfo(j).Length)
                        }
        }
