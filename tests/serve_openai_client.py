"""The official `openai` Python client against `colobench serve` (run by tests/test_serve.c).

Usage: serve_openai_client.py URL   (URL = http://127.0.0.1:PORT of a server started with
`--model tiny`: seeded random weights, no tokenizer, so outputs are " ID" texts, docs/serve.md)

Checks that the package accepts every shape colobench serve sends and that the answers agree:
models.list; completions.create with token ids and with text, streaming and not (the chunks'
texts joined equal the non-streaming text, one chunk a token, finish_reason on the last one,
the usage chunk with include_usage); chat.completions.create, streaming and not (the role
first, then content deltas joining to the non-streaming message); a seeded sampled request
repeated gives the same text; an unknown model raises NotFoundError and n=2 BadRequestError.
Prints "serve_openai_client: ok" and exits 0, or fails with an AssertionError.
"""
import sys

import openai


def main(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    models = client.models.list()
    names = [m.id for m in models.data]
    assert names == ["tiny"], names
    assert models.data[0].object == "model" and models.data[0].owned_by == "colobench"
    name = names[0]
    eos_off = {"ignore_eos": True}

    # completions with token ids, greedy, not streaming
    r = client.completions.create(model=name, prompt=[5, 17, 300, 42], max_tokens=8,
                                  temperature=0, extra_body=eos_off)
    assert r.object == "text_completion", r
    assert r.id.startswith("cmpl-"), r.id
    assert r.model == name
    choice = r.choices[0]
    assert choice.index == 0 and choice.finish_reason == "length", choice
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 8, r.usage
    assert r.usage.total_tokens == 12, r.usage
    text = choice.text
    assert len(text.split()) == 8 and all(0 <= int(t) < 512 for t in text.split()), text

    # the same, streaming, with usage
    chunks = list(client.completions.create(model=name, prompt=[5, 17, 300, 42], max_tokens=8,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body=eos_off))
    content = [c for c in chunks if c.choices]
    assert len(content) == 8, len(content)
    assert "".join(c.choices[0].text for c in content) == text
    assert [c.choices[0].finish_reason for c in content] == [None] * 7 + ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8, chunks[-1]
    assert chunks[-1].usage.prompt_tokens == 4

    # a text prompt: one token a byte without a tokenizer
    r = client.completions.create(model=name, prompt="Hello", max_tokens=4, temperature=0,
                                  extra_body=eos_off)
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 4, r.usage

    # seeded sampling repeats
    kw = dict(model=name, prompt="seeded", max_tokens=12, temperature=0.9, top_p=0.95, seed=7,
              extra_body=eos_off)
    a = client.completions.create(**kw).choices[0].text
    b = client.completions.create(**kw).choices[0].text
    assert a == b, (a, b)

    # chat, not streaming
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(model=name, messages=msgs, max_tokens=6, temperature=0,
                                       extra_body=eos_off)
    assert r.object == "chat.completion", r
    assert r.id.startswith("chatcmpl-"), r.id
    msg = r.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str), msg
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len("system: Be brief.\nuser: Hello\nassistant:"), r.usage
    assert r.usage.completion_tokens == 6, r.usage

    # chat, streaming, with usage and max_completion_tokens
    chunks = list(client.chat.completions.create(model=name, messages=msgs,
                                                 max_completion_tokens=6, temperature=0,
                                                 stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body=eos_off))
    assert chunks[0].object == "chat.completion.chunk", chunks[0]
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    deltas = [c for c in chunks[1:] if c.choices]
    assert len(deltas) == 6, len(deltas)
    assert "".join(c.choices[0].delta.content for c in deltas) == msg.content
    assert deltas[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].choices == [], chunks[-1]

    # errors as the package's exception classes
    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and "no-such-model" in str(e), e
    try:
        client.completions.create(model=name, prompt="x", max_tokens=1, n=2)
        raise AssertionError("n=2 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "n:" in str(e), e
    print("serve_openai_client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
