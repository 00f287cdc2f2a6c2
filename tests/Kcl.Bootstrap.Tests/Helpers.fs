(*
    Test helpers: temporary folders, generated jars, a Maven-layout repository on disk, and a tiny HTTP server on
    127.0.0.1 that serves it, with scripted misbehaviour (429, 500, truncated and dropped bodies) per path.
*)
module Kcl.Bootstrap.Tests.Helpers

open System
open System.Collections.Concurrent
open System.IO
open System.IO.Compression
open System.Net
open System.Net.Sockets
open System.Security.Cryptography
open System.Text
open System.Threading
open System.Threading.Tasks
open Kcl.Bootstrap

/// A temporary folder, deleted on dispose. The name holds a space, so every path built on it does too.
type TempDir(?prefix: string) =
    let path =
        Path.Combine(
            Path.GetTempPath(),
            sprintf "%s %s" (defaultArg prefix "kcl-bootstrap") (Guid.NewGuid().ToString "N")
        )

    do Directory.CreateDirectory path |> ignore
    member _.Path = path

    member _.Sub(name: string) =
        Directory.CreateDirectory(Path.Combine(path, name)).FullName

    interface IDisposable with
        member _.Dispose() =
            try
                Directory.Delete(path, true)
            with _ ->
                ()

/// A class file's first bytes: magic, minor 0, the given major; then filler so entries differ.
let classBytes (major: int) (filler: string) =
    Array.concat
        [
            [| 0xCAuy; 0xFEuy; 0xBAuy; 0xBEuy; 0uy; 0uy; byte (major >>> 8); byte major |]
            Encoding.UTF8.GetBytes filler
        ]

/// A jar (a zip) holding the given entries.
let makeJar (entries: (string * byte[]) list) =
    use memory = new MemoryStream()

    do
        use zip = new ZipArchive(memory, ZipArchiveMode.Create, true)

        for name, bytes in entries do
            use s = zip.CreateEntry(name).Open()
            s.Write(bytes, 0, bytes.Length)

    memory.ToArray()

/// A jar of Java 11 classes (major 55) for a coordinate, plus a Java 21 multi-release class and a module-info
/// of major 65 that must not count.
let jarFor (c: Coordinate) =
    let pkg = c.Group.Replace('.', '/') + "/" + c.Artifact.Replace('-', '_')

    makeJar
        [
            pkg + "/A.class", classBytes 55 (string c)
            pkg + "/B.class", classBytes 52 (string c)
            "META-INF/versions/21/" + pkg + "/A.class", classBytes 65 (string c)
            "module-info.class", classBytes 65 (string c)
        ]

/// Lower-case hex SHA-1 of bytes.
let sha1 (bytes: byte[]) =
    Convert.ToHexStringLower(SHA1.HashData bytes)

/// Lower-case hex SHA-256 of bytes.
let sha256 (bytes: byte[]) =
    Convert.ToHexStringLower(SHA256.HashData bytes)

/// Writes a jar and its .sha1 (and optionally .sha256) into a Maven-layout folder; returns the jar's path.
let publish (root: string) (c: Coordinate) (jar: byte[]) (withSha256: bool) =
    let path = Path.Combine(root, Coordinate.repositoryPath c)
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    File.WriteAllBytes(path, jar)
    File.WriteAllText(path + ".sha1", sha1 jar + "  " + Path.GetFileName path + "\n")

    if withSha256 then
        File.WriteAllText(path + ".sha256", sha256 jar)

    path

/// The shipped 3.1.3 manifest: 79 coordinates.
let release313 () =
    match Manifest.release "3.1.3" with
    | Ok m -> m
    | Error e -> failwith e

/// A manifest of the first n entries of 3.1.3.
let smallManifest n =
    let m = release313 ()

    { m with
        Entries = List.truncate n m.Entries
    }

/// Publishes every jar of a manifest into root; returns the jars' bytes by coordinate.
let publishAll (root: string) (m: Manifest) =
    m.Entries
    |> List.map (fun e ->
        let jar = jarFor e.Coordinate
        publish root e.Coordinate jar false |> ignore
        e.Coordinate, jar)
    |> Map.ofList

/// How the server answers one request.
type Reply =
    /// A complete response.
    | Respond of status: int * headers: (string * string) list * body: byte[]
    /// Headers declaring the full length, then only part of the body, then the connection is reset.
    | DropMidBody of body: byte[] * sent: int

/// A tiny HTTP/1.1 server on 127.0.0.1 serving a folder, one request per connection. Scripted replies queued for
/// a path are used first; then the file, or 404.
type RepoServer(root: string) =
    let listener = new TcpListener(IPAddress.Loopback, 0)
    let scripts = ConcurrentDictionary<string, ConcurrentQueue<Reply>>()
    let requests = ConcurrentQueue<string>()
    let stop = new CancellationTokenSource()

    let reply (path: string) =
        match scripts.TryGetValue path with
        | true, q when not q.IsEmpty ->
            match q.TryDequeue() with
            | true, r -> r
            | _ -> Respond(500, [], [||])
        | _ ->
            let file = Path.Combine(root, Uri.UnescapeDataString(path.TrimStart '/'))

            if File.Exists file then
                Respond(200, [], File.ReadAllBytes file)
            else
                Respond(404, [], [||])

    let serve (client: TcpClient) =
        task {
            use client = client
            use stream = client.GetStream()
            let buffer = Array.zeroCreate<byte> 8192
            let request = StringBuilder()

            while not (request.ToString().Contains "\r\n\r\n") do
                let! n = stream.ReadAsync(buffer, 0, buffer.Length)

                if n = 0 then
                    failwith "client closed"
                else
                    request.Append(Encoding.ASCII.GetString(buffer, 0, n)) |> ignore

            let path = request.ToString().Split(' ')[1]
            requests.Enqueue path

            let head (status: int) (length: int) (headers: (string * string) list) =
                let extra =
                    headers |> List.map (fun (k, v) -> sprintf "%s: %s\r\n" k v) |> String.concat ""

                Encoding.ASCII.GetBytes(
                    sprintf "HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n" status length extra
                )

            match reply path with
            | Respond(status, headers, body) ->
                let h = head status body.Length headers
                do! stream.WriteAsync(h, 0, h.Length)
                do! stream.WriteAsync(body, 0, body.Length)
            | DropMidBody(body, sent) ->
                let h = head 200 body.Length []
                do! stream.WriteAsync(h, 0, h.Length)
                do! stream.WriteAsync(body, 0, sent)
                do! stream.FlushAsync()
                client.Client.LingerState <- LingerOption(true, 0)
        }

    do
        listener.Start()

        task {
            while not stop.IsCancellationRequested do
                let! client = listener.AcceptTcpClientAsync stop.Token
                serve client |> ignore
        }
        |> ignore

    /// The base URL, ending in '/'.
    member _.Url =
        Uri(sprintf "http://127.0.0.1:%d/" (listener.LocalEndpoint :?> IPEndPoint).Port)

    /// Queues scripted replies for a coordinate's jar (or one of its checksum files, with suffix ".sha1").
    member _.Script(c: Coordinate, suffix: string, replies: Reply list) =
        let q =
            scripts.GetOrAdd("/" + Coordinate.repositoryPath c + suffix, fun _ -> ConcurrentQueue())

        for r in replies do
            q.Enqueue r

    /// Every request path so far, in arrival order.
    member _.Requests = List.ofSeq requests

    interface IDisposable with
        member _.Dispose() =
            stop.Cancel()
            listener.Stop()

/// Fetch settings for tests: short backoff, 3 attempts.
let settings (repository: Uri) (cache: string) =
    { Fetch.defaults cache with
        Repository = repository
        MaxAttempts = 3
        BackoffBase = TimeSpan.FromMilliseconds 20.0
        BackoffCap = TimeSpan.FromSeconds 5.0
    }

/// One HttpClient for all tests.
let client = Fetch.createClient ()

/// Runs a fetch synchronously, collecting its events.
let fetch (s: FetchSettings) (m: Manifest) =
    let events = ConcurrentQueue<FetchEvent>()

    let r =
        (Fetch.run client s events.Enqueue m CancellationToken.None).GetAwaiter().GetResult()

    r, List.ofSeq events

/// Every file under a folder.
let filesUnder (dir: string) =
    if Directory.Exists dir then
        Directory.GetFiles(dir, "*", SearchOption.AllDirectories) |> List.ofArray
    else
        []

/// The ok value of a result, or a failure naming the errors.
let ok (r: Result<'a, 'e>) =
    match r with
    | Ok v -> v
    | Error e -> failwithf "expected Ok, got %A" e
