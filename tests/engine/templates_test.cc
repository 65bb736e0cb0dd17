#include <catch2/catch.hpp>

#include <random>

#include "engine/templates.h"

using namespace herald;
using Catch::Matchers::Contains;

namespace {
EventTypeConfig Type() {
  EventTypeConfig t;
  t.name = "billing.invoice.paid";
  t.channels = {"email", "push"};
  t.templates["email"]["en"] = {{"subject", "Invoice {{number}} paid"},
                                {"text", "Paid: {{amount}} by {{payer}}"},
                                {"html", "<p>Paid: <b>{{amount}}</b> by {{payer}}{{#items}}<li>{{.}}</li>{{/items}}</p>"}};
  t.templates["email"]["de"] = {{"subject", "Rechnung {{number}} bezahlt"}, {"text", "Bezahlt: {{amount}}"}};
  t.templates["push"]["en"] = {{"title", "{{payer}}\r\nBcc: x@evil"}, {"body", "{{amount}}"}};
  return t;
}
const nlohmann::json kVars = {{"number", 42}, {"amount", "12.00 EUR"}, {"payer", "Ada <ada@x> & Co"},
                              {"items", {"<a>", "b"}}};
}  // namespace

TEST_CASE("Templates: variables render raw in text and escaped in HTML") {
  RenderedContent out;
  REQUIRE(Render(Type(), "email", "en", "en", kVars, out).ok());
  CHECK(out.locale == "en");
  CHECK(out.fields["subject"] == "Invoice 42 paid");
  CHECK(out.fields["text"] == "Paid: 12.00 EUR by Ada <ada@x> & Co");
  CHECK(out.fields["html"] == "<p>Paid: <b>12.00 EUR</b> by Ada &lt;ada@x&gt; &amp; Co<li>&lt;a&gt;</li><li>b</li></p>");
}

TEST_CASE("Templates: locale falls back from region to language to the default") {
  RenderedContent out;
  REQUIRE(Render(Type(), "email", "de-AT", "en", kVars, out).ok());
  CHECK(out.locale == "de");
  CHECK(out.fields["subject"] == "Rechnung 42 bezahlt");
  REQUIRE(Render(Type(), "email", "fr", "en", kVars, out).ok());
  CHECK(out.locale == "en");
  CHECK(Render(Type(), "webhook", "en", "en", kVars, out).code() == Status::Code::kNotFound);
}

TEST_CASE("Templates: titles and subjects never carry CR or LF") {
  RenderedContent out;
  REQUIRE(Render(Type(), "push", "en", "en", kVars, out).ok());
  CHECK(out.fields["title"] == "Ada <ada@x> & Co Bcc: x@evil");
  nlohmann::json evil = kVars;
  evil["number"] = "1\r\nBcc: victim@example.org";
  REQUIRE(Render(Type(), "email", "en", "en", evil, out).ok());
  CHECK(out.fields["subject"].find_first_of("\r\n") == std::string::npos);
}

TEST_CASE("Templates: syntax errors are found before they can render wrongly") {
  CHECK(CheckTemplateSyntax("Hi {{name}}, {{#items}}{{.}}{{/items}} {{! note }}{{{raw}}}").empty());
  CHECK_THAT(CheckTemplateSyntax("Hi {{name"), Contains("never closed"));
  CHECK_THAT(CheckTemplateSyntax("{{#a}}x"), Contains("section \"a\" is never closed"));
  CHECK_THAT(CheckTemplateSyntax("{{#a}}{{/b}}"), Contains("closes section \"a\""));
  CHECK_THAT(CheckTemplateSyntax("{{/a}}"), Contains("never opened"));
  CHECK_THAT(CheckTemplateSyntax("{{> header}}"), Contains("partials"));
  CHECK_THAT(CheckTemplateSyntax("{{=<% %>=}}"), Contains("delimiter"));
  Config c = LoadConfigText("{}", "t", {});
  EventTypeConfig t = Type();
  t.templates["push"]["en"]["body"] = "{{#x}}";
  c.event_types[t.name] = t;
  try {
    CheckTemplates(c);
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Contains("event_types.billing.invoice.paid.templates.push.en.body: section \"x\""));
  }
}

TEST_CASE("Templates: plain-variable templates render as libmstch renders them") {
  // Random templates of text and variable tags in all three forms, with names that exist, do not,
  // go through objects, end in a dot or are the context itself, against values of every JSON
  // type; a few carry a section or a comment, which libmstch renders either way.
  const nlohmann::json vars = nlohmann::json::parse(R"({"name":"Ada <x> & 'Co' \"q\"","num":42,"neg":-3,"fl":1.5,
      "big":18446744073709551615,"flag":true,"off":false,"nul":null,"arr":["<a>",1],"s":"str","a-b":"dash",
      "a_b":"under","":"root-empty","obj":{"s":"in<ner>","n":7,"o":{"s":"deep"},"":"empty-key"}})");
  const std::vector<std::string> names = {"name", "num", "neg", "fl", "big", "flag", "off", "nul", "arr", "s",
                                          "a-b", "a_b", "obj", "obj.s", "obj.n", "obj.o.s", "obj.o", "obj.",
                                          "obj.missing", "missing", "missing.x", ".", "s.x", "arr.0", "obj..",
                                          "nul.x", "flag.x"};
  const std::vector<std::string> texts = {"", "Hi ", "\n", "  ", "}", "}}", "a{b", "&<>\"'", "é ", " line\r\n"};
  const std::vector<std::string> pads = {"", " ", "  "};
  const std::vector<std::string> others = {"{{#flag}}x{{/flag}}", "{{! note }}", "{{^nul}}y{{/nul}}",
                                           "{{#arr}}<{{.}}>{{/arr}}"};
  std::mt19937 rng(20261206);
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  int plain = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string src;
    const int pieces = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < pieces; ++k) {
      src += pick(texts);
      const std::string name = pick(names), pad = pick(pads), pad2 = pick(pads);
      switch (rng() % 8) {
        case 0: src += "{{{" + pad + name + pad2 + "}}}"; break;
        case 1: src += "{{&" + pad + name + pad2 + "}}"; break;
        case 2:
          if (rng() % 4 == 0) {
            src += pick(others);
            break;
          }
          [[fallthrough]];
        default: src += "{{" + pad + name + pad2 + "}}";
      }
    }
    src += pick(texts);
    if (IsPlainTemplate(src)) ++plain;
    for (bool html : {false, true}) {
      INFO("template: " << src << (html ? " (html)" : ""));
      CHECK(RenderTemplate(src, vars, html) == RenderTemplateWithMstch(src, vars, html));
    }
  }
  CHECK(plain > 1500);  // most took the plain path
}

TEST_CASE("Templates: only plain variables skip libmstch") {
  CHECK(IsPlainTemplate("{{actor}} liked {{ post.title }}: {{{raw}}} {{&raw}}"));
  CHECK(IsPlainTemplate("no tags at all"));
  CHECK_FALSE(IsPlainTemplate("{{#items}}{{.}}{{/items}}"));
  CHECK_FALSE(IsPlainTemplate("Hi {{! a comment }}"));
  CHECK_FALSE(IsPlainTemplate("{{^none}}nothing{{/none}}"));
  CHECK_FALSE(IsPlainTemplate("{{ & spaced }}"));
  // A section's output is still libmstch's.
  CHECK(RenderTemplate("{{#arr}}[{{.}}]{{/arr}}", nlohmann::json{{"arr", {"a", "b"}}}, false) == "[a][b]");
}
